"""Meter behaviour through its public methods: JSON, thresholds, export, summaries and
org-scoped metrics."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import tsmeter
from tests.unit.test_service import T
from tsmeter import (
    Meter,
    MetricDefinition,
    NotFoundError,
    PeriodType,
    ThresholdAction,
    UsageRecord,
    UsageThreshold,
    ValidationError,
)


# -- JSON --------------------------------------------------------------------------------------
def test_metric_definition_json(meter: Meter) -> None:
    """MetricDefinition accepts camelCase and snake_case and emits camelCase that round-trips."""
    camel = MetricDefinition.model_validate(
        {"key": "k", "aggregationType": "avg", "resetPeriod": "daily", "orgId": "acme"}
    )
    snake = MetricDefinition.model_validate(
        {
            "key": "k",
            "aggregation_type": "AVG",
            "reset_period": "DAILY",
            "org_id": "acme",
            "id": camel.id,
        }
    )
    assert camel == snake
    doc = meter.get_metric("storage").to_json_dict()
    assert {"aggregationType", "resetPeriod", "orgId", "createdAt", "updatedAt"} <= doc.keys()
    assert "aggregation_type" not in doc
    assert MetricDefinition.model_validate(json.loads(json.dumps(doc))) == meter.get_metric(
        "storage"
    )


def test_usage_record_json(meter: Meter) -> None:
    """UsageRecord accepts both spellings and its camelCase JSON round-trips."""
    doc = {
        "id": "j-1",
        "metricKey": "storage",
        "subjectType": "org",
        "subjectId": "o1",
        "quantity": 2.5,
        "timestamp": "2026-01-15T11:30:00+01:00",
        "metadata": {"a": [1]},
        "source": "s",
        "orgId": None,
    }
    record = UsageRecord.model_validate(doc)
    snake = UsageRecord.model_validate(
        {
            "id": "j-1",
            "metric_key": "storage",
            "subject_type": "org",
            "subject_id": "o1",
            "quantity": 2.5,
            "timestamp": T,
            "metadata": {"a": [1]},
            "source": "s",
        }
    )
    assert record == snake
    out = record.to_json_dict()
    assert set(out) == {
        "id",
        "metricKey",
        "subjectType",
        "subjectId",
        "quantity",
        "timestamp",
        "metadata",
        "source",
        "orgId",
    }
    assert UsageRecord.model_validate(out) == record
    assert meter.record_batch([out]).recorded == 1
    assert meter.get_usage("storage") == [record]


def test_usage_threshold_json() -> None:
    """UsageThreshold accepts both spellings and its camelCase JSON round-trips."""
    camel = UsageThreshold.model_validate(
        {
            "id": "t-1",
            "metricKey": "api_calls",
            "subjectType": "org",
            "threshold": 10,
            "warnThreshold": 9,
            "notifyEmails": ["a@example.com"],
            "action": "block",
        }
    )
    snake = UsageThreshold.model_validate(
        {
            "id": "t-1",
            "metric_key": "api_calls",
            "subject_type": "org",
            "threshold": 10,
            "warn_threshold": 9,
            "notify_emails": ["a@example.com"],
            "action": "BLOCK",
        }
    )
    assert camel == snake and camel.action is ThresholdAction.BLOCK
    out = camel.to_json_dict()
    assert {"metricKey", "warnThreshold", "notifyEmails", "notifyWebhook"} <= out.keys()
    assert UsageThreshold.model_validate(out) == camel


def test_summary_json_is_camel_case(meter: Meter) -> None:
    """A UsageSummary serialises with camelCase keys and ISO timestamps."""
    meter.record("storage", "org", "o1", 3, timestamp=T)
    doc = meter.get_usage_summary("storage", "org", "o1", "DAILY", at=T).to_json_dict()
    assert doc["totalQuantity"] == "3.000000" and doc["recordCount"] == 1  # a decimal string
    assert doc["periodStart"] == "2026-01-14T23:00:00Z"  # midnight in Paris
    assert doc["periodType"] == "DAILY" and doc["aggregationType"] == "SUM"


# -- thresholds --------------------------------------------------------------------------------
def test_threshold_crud(meter: Meter) -> None:
    """Thresholds are created (warn level 80 % by default), read, listed, updated and deleted."""
    t = meter.create_threshold(
        "api_calls",
        "org",
        1000,
        notify_emails=["ops@example.com"],
        notify_webhook="https://example.com/hook",
    )
    assert (t.subject_id, t.warn_threshold, t.action) == ("*", 800, ThresholdAction.ALERT)
    one = meter.create_threshold("api_calls", "org", 50, "o1", warn_threshold=45, action="BLOCK")
    other = meter.create_threshold("storage", "user", 5)
    assert meter.get_threshold(t.id) == t
    assert meter.list_thresholds() == [t, one, other]
    assert meter.list_thresholds("api_calls", subject_id="o1") == [t, one]  # "*" applies too
    assert meter.list_thresholds("api_calls", subject_id="o2") == [t]
    assert meter.list_thresholds(subject_type="user") == [other]
    raised = meter.update_threshold(t.id, threshold=2000)
    assert (raised.threshold, raised.warn_threshold) == (2000, 1600)
    assert raised.created_at == t.created_at and raised.notify_emails == t.notify_emails
    kept = meter.update_threshold(one.id, threshold=60, warnThreshold=55)
    assert (kept.threshold, kept.warn_threshold) == (60, 55)
    assert meter.get_threshold(one.id) == kept
    meter.delete_threshold(t.id)
    with pytest.raises(NotFoundError):
        meter.get_threshold(t.id)
    with pytest.raises(NotFoundError):
        meter.delete_threshold(t.id)
    assert meter.list_thresholds() == [kept, other]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"notify_emails": ["not-an-email"]}, "notifyEmails"),
        ({"notify_emails": ["a b@example.com"]}, "notifyEmails"),
        ({"notify_webhook": "ftp://example.com"}, "notifyWebhook"),
        ({"notify_webhook": "example.com/hook"}, "notifyWebhook"),
        ({"threshold": 0}, "threshold"),
        ({"threshold": -5}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"action": "EXPLODE"}, "action"),
        ({"threshold": "1.7976931348623157e+308"}, "threshold"),  # beyond any total
        ({"threshold": 2**63}, "threshold"),
        ({"org_id": {"a": 1}}, "orgId"),  # checked before the metric is looked up with it
        ({"orgId": 7}, "orgId"),
    ],
)
def test_threshold_validation(meter: Meter, fields: dict[str, Any], field: str) -> None:
    """Bad emails, webhooks, limits and actions are ValidationErrors naming the field."""
    limit = fields.pop("threshold", 100)
    with pytest.raises(ValidationError) as caught:
        meter.create_threshold("api_calls", "org", limit, **fields)
    assert caught.value.field == field
    assert meter.list_thresholds() == []


def test_threshold_warn_level_must_not_exceed_the_limit(meter: Meter) -> None:
    """A warn level above the limit is rejected, and a threshold on an unknown metric too."""
    with pytest.raises(ValidationError, match="warnThreshold"):
        meter.create_threshold("api_calls", "org", 100, warn_threshold=150)
    with pytest.raises(NotFoundError):
        meter.create_threshold("no_such_metric", "org", 100)
    t = meter.create_threshold("api_calls", "org", 100)
    with pytest.raises(ValidationError) as caught:
        meter.update_threshold(t.id, metricKey="storage")
    assert caught.value.field == "metricKey"


# -- export and summaries ----------------------------------------------------------------------
@pytest.fixture
def exported(meter: Meter) -> Meter:
    """A meter holding three storage records and one org-scoped api_calls record."""
    meter.define_metric("api_calls", org_id="acme", aggregation_type="COUNT")
    meter.record(
        "storage",
        "org",
        "o1",
        1.5,
        timestamp=T,
        id="x-1",
        metadata={"region": "eu", "note": 'a,"b"'},
        source="api",
    )
    meter.record("storage", "org", "o2", 2, timestamp=T + timedelta(hours=1), id="x-2")
    meter.record("storage", "org", "o1", 3, timestamp=T + timedelta(days=1), id="x-3")
    meter.record("api_calls", "org", "o9", timestamp=T, id="x-4", org_id="acme")
    return meter


def test_export_jsonl(exported: Meter) -> None:
    """JSON Lines export writes one camelCase record per line and returns the count."""
    out = io.StringIO()
    assert exported.export_usage(out, "storage") == 3
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["id"] for d in docs] == ["x-1", "x-2", "x-3"]
    first = exported.get_usage("storage")[0]
    zone = exported.calendar.zone  # Europe/Paris: times in the Meter's zone, with the offset
    assert docs[0] == {**first.to_json_dict(), "timestamp": "2026-01-15T11:30:00+01:00"}
    assert datetime.fromisoformat(docs[0]["timestamp"]) == first.timestamp
    assert datetime.fromisoformat(docs[0]["timestamp"]).utcoffset() == zone.utcoffset(T)
    assert docs[0]["metadata"] == {"region": "eu", "note": 'a,"b"'}
    everything = io.StringIO()
    assert exported.export_usage(everything) == 4
    assert [json.loads(line)["orgId"] for line in everything.getvalue().splitlines()] == [
        None,
        None,
        None,
        "acme",
    ]


def test_export_of_an_org_scoped_metric(exported: Meter) -> None:
    """With an org id, export reaches that org's own metric, or every metric of that org."""
    out = io.StringIO()
    assert exported.export_usage(out, "api_calls", org_id="acme") == 1
    assert json.loads(out.getvalue())["id"] == "x-4"
    assert exported.export_usage(io.StringIO(), "api_calls") == 0  # the global one is empty
    assert exported.export_usage(io.StringIO(), org_id="acme") == 1


def test_export_csv_with_filters(exported: Meter) -> None:
    """CSV export has a header, JSON metadata, empty cells for missing values, and filters."""
    out = io.StringIO()
    count = exported.export_usage(
        out, "storage", fmt="csv", subject_id="o1", end=T + timedelta(hours=12)
    )
    assert count == 1
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == [
        "id",
        "metricKey",
        "subjectType",
        "subjectId",
        "quantity",
        "timestamp",
        "metadata",
        "source",
        "orgId",
    ]
    assert rows[0]["id"] == "x-1" and float(rows[0]["quantity"]) == 1.5
    assert json.loads(rows[0]["metadata"]) == {"region": "eu", "note": 'a,"b"'}
    assert (rows[0]["source"], rows[0]["orgId"]) == ("api", "")
    later = io.StringIO()
    assert exported.export_usage(later, "storage", fmt="csv", start=T + timedelta(hours=1)) == 2


def test_summary_of_a_period_without_records_is_zero(meter: Meter) -> None:
    """get_usage_summary for an empty period is zero usage with that period's bounds."""
    meter.record("storage", "org", "o1", 5, timestamp=T)
    s = meter.get_usage_summary("storage", "org", "o1", "DAILY", at="2026-03-29T12:00:00Z")
    assert (s.total_quantity, s.record_count, s.sum) == (0, 0, 0)
    assert (s.min, s.max, s.last_value, s.last_timestamp) == (None, None, None, None)
    assert s.period_start == datetime(2026, 3, 28, 23, tzinfo=UTC)  # Paris, 23-hour day
    assert s.period_end - s.period_start == timedelta(hours=23)
    other = meter.get_usage_summary("storage", "org", "nobody", "MONTHLY", at=T)
    assert other.total_quantity == 0 and other.subject_id == "nobody"


def test_summaries_reject_bad_ranges_and_periods(meter: Meter) -> None:
    """An empty range or an unknown period type is a ValidationError naming the field."""
    with pytest.raises(ValidationError) as caught:
        meter.get_usage_summaries("storage", "DAILY", start=T, end=T)
    assert caught.value.field == "end"
    with pytest.raises(ValidationError) as caught:
        meter.get_usage_summaries("storage", "FORTNIGHTLY", start=T, end=T + timedelta(days=1))
    assert caught.value.field == "periodType"
    with pytest.raises(ValidationError) as caught:
        meter.aggregate("FORTNIGHTLY")
    assert caught.value.field == "periodType"


def test_default_period_is_the_reset_period(meter: Meter) -> None:
    """Without a period type, summaries use the metric's reset period (NEVER: monthly)."""
    meter.define_metric("daily_calls", aggregation_type="COUNT", reset_period="DAILY")
    meter.define_metric("lifetime", aggregation_type="COUNT", reset_period="NEVER")
    for key in ("daily_calls", "lifetime"):
        meter.record(key, "org", "o1", timestamp=T)
    assert meter.get_usage_summary("daily_calls", "org", "o1", at=T).period_type is PeriodType.DAILY
    assert meter.get_usage_summary("lifetime", "org", "o1", at=T).period_type is PeriodType.MONTHLY


# -- org-scoped metrics ------------------------------------------------------------------------
def test_org_scoped_metric_resolution(meter: Meter) -> None:
    """A record with an org id uses that org's definition, else falls back to the global one."""
    meter.define_metric("storage", org_id="acme", aggregation_type="MAX")
    meter.define_metric("api_calls", org_id="acme", aggregation_type="SUM")
    for q in (5, 9, 2):
        meter.record("storage", "org", "o1", q, timestamp=T, org_id="acme")
        meter.record("storage", "org", "o1", q, timestamp=T, org_id="beta")
    assert meter.get_usage_summary("storage", "org", "o1", at=T, org_id="acme").total_quantity == 9
    assert meter.get_usage_summary("storage", "org", "o1", at=T).total_quantity == 16  # global SUM
    assert len(meter.get_usage("storage", org_id="acme")) == 3
    assert len(meter.get_usage("storage")) == 3
    with pytest.raises(ValidationError) as caught:  # acme's api_calls is SUM: quantity needed
        meter.record("api_calls", "org", "o1", timestamp=T, org_id="acme")
    assert caught.value.field == "quantity"
    assert meter.record("api_calls", "org", "o1", timestamp=T, org_id="beta").quantity == 1.0


def test_newly_defined_org_metric_applies_at_once(meter: Meter) -> None:
    """Defining an org's own metric takes effect for that org's next record, not after a cache
    expires."""
    meter.record("storage", "org", "o1", 4, timestamp=T, org_id="acme")  # global definition
    meter.define_metric("storage", org_id="acme", aggregation_type="MAX")
    meter.record("storage", "org", "o1", 6, timestamp=T, org_id="acme")
    assert [r.quantity for r in meter.get_usage("storage", org_id="acme")] == [6.0]
    assert [r.quantity for r in meter.get_usage("storage")] == [4.0]


def test_connect_validates_zone_and_url(tmp_path: Path) -> None:
    """An unknown time zone or store scheme is a ValidationError naming the field."""
    with pytest.raises(ValidationError) as caught:
        tsmeter.connect(f"sqlite:///{tmp_path / 'z.db'}", timezone="Mars/Olympus")
    assert caught.value.field == "timezone"
    with pytest.raises(ValidationError) as caught:
        tsmeter.connect("postgres://localhost/x")
    assert caught.value.field == "url"
