"""Meter behaviour through its public methods: metrics, recording, events, JSON, thresholds,
export and org-scoped metrics."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import tsmeter
from tsmeter import (
    AggregationType,
    ConflictError,
    Event,
    Meter,
    MetricDefined,
    MetricDefinition,
    MetricDeleted,
    MetricUpdated,
    NotFoundError,
    PeriodType,
    ThresholdAction,
    UsageAggregated,
    UsageBatchRecorded,
    UsageRecord,
    UsageRecorded,
    UsageThreshold,
    ValidationError,
)

T = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)


@pytest.fixture
def meter(tmp_path: Path) -> Iterator[Meter]:
    """A meter on a fresh file with a COUNT metric ``api_calls`` and a SUM metric ``storage``."""
    with tsmeter.connect(f"sqlite:///{tmp_path / 'x.db'}", timezone="Europe/Paris") as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        meter.define_metric("storage", aggregation_type="SUM", unit="GB")
        yield meter


def collect(meter: Meter, event_type: type[Event] = Event) -> list[Any]:
    """Subscribe to ``event_type`` and return the list events will be appended to."""
    seen: list[Any] = []
    meter.subscribe(event_type, seen.append)
    return seen


def stored_count(meter: Meter) -> int:
    """How many records the meter holds over every metric."""
    return meter.export_usage(io.StringIO())


# -- metrics -----------------------------------------------------------------------------------
def test_define_get_and_list_metrics(meter: Meter) -> None:
    """A defined metric can be read back, listed in its scope, and publishes metric.defined."""
    events = collect(meter)
    m = meter.define_metric("seats", aggregation_type="max", unit="seats", name="Seats")
    assert (m.key, m.aggregation_type, m.unit) == ("seats", AggregationType.MAX, "seats")
    assert m.created_at is not None and m.created_at == m.updated_at
    assert meter.get_metric("seats") == m
    org = meter.define_metric("seats", org_id="acme")
    assert [x.key for x in meter.list_metrics()] == ["api_calls", "seats", "storage"]
    assert meter.list_metrics("acme") == [org]
    assert len(meter.list_metrics(all_orgs=True)) == 4
    assert [type(e) for e in events] == [MetricDefined, MetricDefined]
    assert events[0].metric == m and events[0].name == "metric.defined"


def test_define_existing_key_conflicts(meter: Meter) -> None:
    """Defining a key that exists in the same scope raises ConflictError and publishes nothing."""
    events = collect(meter)
    with pytest.raises(ConflictError, match="api_calls"):
        meter.define_metric("api_calls")
    assert events == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"aggregation_type": "MEDIAN"}, "aggregationType"),
        ({"reset_period": "FORTNIGHTLY"}, "resetPeriod"),
        ({"colour": "red"}, "colour"),
        ({"unit": "u" * 4097}, "unit"),
    ],
)
def test_define_metric_validation(meter: Meter, fields: dict[str, Any], field: str) -> None:
    """A bad metric field is a ValidationError naming the field, and nothing is defined."""
    with pytest.raises(ValidationError) as caught:
        meter.define_metric("new_metric", **fields)
    assert caught.value.field == field
    with pytest.raises(NotFoundError):
        meter.get_metric("new_metric")


@pytest.mark.parametrize("key", ["", "a" * 257, "bad\nkey", "tab\tkey", "nul\x00key"])
def test_define_metric_rejects_bad_keys(meter: Meter, key: str) -> None:
    """Metric keys follow the name rules (1–256 characters, no control characters)."""
    with pytest.raises(ValidationError) as caught:
        meter.define_metric(key)
    assert caught.value.field == "key"


@pytest.mark.parametrize(
    "changes",
    [{"aggregation_type": "MAX", "unit": "bytes"}, {"aggregationType": "MAX", "unit": "bytes"}],
    ids=["snake_case", "camelCase"],
)
def test_update_metric(meter: Meter, changes: dict[str, Any]) -> None:
    """update_metric accepts either spelling, keeps id and creation time, and publishes
    metric.updated."""
    before = meter.get_metric("storage")
    events = collect(meter, MetricUpdated)
    after = meter.update_metric("storage", **changes)
    assert (after.aggregation_type, after.unit) == (AggregationType.MAX, "bytes")
    assert (after.id, after.key, after.created_at) == (before.id, before.key, before.created_at)
    assert after.updated_at is not None and before.updated_at is not None
    assert after.updated_at >= before.updated_at
    assert meter.get_metric("storage") == after
    assert [e.metric for e in events] == [after]


def test_update_metric_applies_to_past_periods(meter: Meter) -> None:
    """A new aggregation type changes the totals of periods already recorded and aggregated."""
    for q in (2, 7, 3):
        meter.record("storage", "org", "o1", q, timestamp=T)
    meter.aggregate("MONTHLY")
    assert meter.get_usage_summary("storage", "org", "o1", at=T).total_quantity == 12
    meter.update_metric("storage", aggregation_type="MAX")
    assert meter.get_usage_summary("storage", "org", "o1", at=T).total_quantity == 7


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": "x"}, "id"),
        ({"orgId": "acme"}, "orgId"),
        ({"created_at": T}, "created_at"),
        ({"createdAt": T}, "createdAt"),
        ({"aggregation_type": "NOPE"}, "aggregationType"),
    ],
)
def test_update_metric_rejects_frozen_and_bad_fields(
    meter: Meter, changes: dict[str, Any], field: str
) -> None:
    """Changing identity fields, or setting a bad value, is a ValidationError naming the field."""
    before = meter.get_metric("storage")
    with pytest.raises(ValidationError) as caught:
        meter.update_metric("storage", **changes)
    assert caught.value.field == field
    assert meter.get_metric("storage") == before


def test_delete_metric_keeps_or_purges_records(meter: Meter) -> None:
    """delete_metric removes the definition (records stay unless purged) and publishes
    metric.deleted with the number purged."""
    events = collect(meter, MetricDeleted)
    meter.record("api_calls", "org", "o1", timestamp=T)
    assert meter.delete_metric("api_calls") == 0
    with pytest.raises(NotFoundError):
        meter.get_metric("api_calls")
    with pytest.raises(ValidationError, match="unknown metric"):
        meter.record("api_calls", "org", "o1", timestamp=T)
    meter.define_metric("api_calls", aggregation_type="COUNT")
    assert len(meter.get_usage("api_calls")) == 1  # the history is still there
    assert meter.delete_metric("api_calls", purge=True) == 1
    meter.define_metric("api_calls", aggregation_type="COUNT")
    assert meter.get_usage("api_calls") == []
    assert [e.purged_records for e in events] == [0, 1]
    with pytest.raises(NotFoundError):
        meter.delete_metric("never_defined")


# -- recording and validation ------------------------------------------------------------------
GOOD: dict[str, Any] = {
    "metric_key": "storage",
    "subject_type": "org",
    "subject_id": "o1",
    "quantity": 1.5,
    "timestamp": T,
}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"timestamp": datetime(2026, 1, 15, 10, 30)}, "timestamp"),
        ({"timestamp": "2026-01-15T10:30:00"}, "timestamp"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"quantity": float("nan")}, "quantity"),
        ({"quantity": float("inf")}, "quantity"),
        ({"quantity": float("-inf")}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"quantity": "5"}, "quantity"),
        ({"quantity": None}, "quantity"),  # required for a SUM metric
        ({"metric_key": "storage\n"}, "metricKey"),
        ({"metric_key": "no_such_metric"}, "metricKey"),
        ({"subject_type": "org\t"}, "subjectType"),
        ({"subject_type": ""}, "subjectType"),
        ({"subject_type": "t" * 257}, "subjectType"),
        ({"subject_id": "o\x001"}, "subjectId"),
        ({"subject_id": ""}, "subjectId"),
        ({"subject_id": "s" * 257}, "subjectId"),
        ({"subject_id": ["o1"]}, "subjectId"),
        ({"subject_id": "o\ud8001"}, "subjectId"),  # a lone surrogate has no UTF-8 form
        ({"id": "req\n1"}, "id"),
        ({"id": ""}, "id"),
        ({"id": "i" * 257}, "id"),
        ({"org_id": "acme\x00"}, "orgId"),
        ({"source": "s" * 257}, "source"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"metadata": "text"}, "metadata"),
        ({"metadata": {"blob": "x" * 65_536}}, "metadata"),
        ({"metadata": {"v": float("nan")}}, "metadata"),
        ({"metadata": {"v": "\udc00"}}, "metadata"),
    ],
)
def test_record_validation_names_the_field(
    meter: Meter, changes: dict[str, Any], field: str
) -> None:
    """Each invalid input to record is a ValidationError naming its field, and nothing is stored."""
    events = collect(meter)
    args = {**GOOD, **changes}
    with pytest.raises(ValidationError) as caught:
        meter.record(
            args.pop("metric_key"),
            args.pop("subject_type"),
            args.pop("subject_id"),
            args.pop("quantity"),
            **args,
        )
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert stored_count(meter) == 0
    assert events == []


def test_record_accepts_the_limits(meter: Meter) -> None:
    """256-character names, metadata just under 64 KiB and aware timestamps in any offset pass."""
    metadata = {"blob": "x" * (65_536 - len('{"blob":""}'))}
    r = meter.record(
        "storage",
        "t" * 256,
        "s" * 256,
        0.5,
        id="i" * 256,
        metadata=metadata,
        timestamp="2026-01-15T16:00:00+05:30",
    )
    assert r.timestamp == T
    assert meter.get_usage("storage") == [r]


def test_count_quantity_defaults_to_one(meter: Meter) -> None:
    """A COUNT metric's quantity defaults to 1; a SUM metric's must be given."""
    assert meter.record("api_calls", "org", "o1", timestamp=T).quantity == 1.0
    with pytest.raises(ValidationError, match="required"):
        meter.record("storage", "org", "o1", timestamp=T)


def test_record_returns_the_stored_record_for_a_known_id(meter: Meter) -> None:
    """Recording an id that exists returns the stored record and publishes no usage.recorded."""
    first = meter.record("storage", "org", "o1", 4, timestamp=T, id="req-1", metadata={"a": 1})
    events = collect(meter, UsageRecorded)
    again = meter.record("storage", "org", "o2", 9, timestamp=T + timedelta(days=1), id="req-1")
    assert again == first
    assert (again.quantity, again.subject_id, again.metadata) == (4.0, "o1", {"a": 1})
    assert events == []
    assert meter.get_usage_summary("storage", "org", "o1", at=T).total_quantity == 4


BATCH = [
    {
        "metricKey": "storage",
        "subjectType": "org",
        "subjectId": f"o{i}",
        "quantity": i,
        "timestamp": T,
        "id": f"b-{i}",
    }
    for i in range(5)
]


@pytest.mark.parametrize(
    ("index", "bad", "field"),
    [
        (3, {"quantity": float("nan")}, "records[3].quantity"),
        (2, {"quantiy": 1}, "records[2].quantiy"),
        (4, {"metricKey": "unknown"}, "records[4].metricKey"),
        (1, {"timestamp": "2026-01-15T10:30:00"}, "records[1].timestamp"),
        (0, {"subjectId": None}, "records[0].subjectId"),
        (2, {"metadata": 5}, "records[2].metadata"),
        (3, {"id": ["b-3"]}, "records[3].id"),
    ],
)
def test_record_batch_is_all_or_nothing(
    meter: Meter, index: int, bad: dict[str, Any], field: str
) -> None:
    """One invalid record stores nothing from the batch, and the error names records[i]."""
    batch = [dict(item) for item in BATCH]
    batch[index].update(bad)
    with pytest.raises(ValidationError) as caught:
        meter.record_batch(batch)
    assert caught.value.field == field
    assert stored_count(meter) == 0


def test_record_batch_counts_duplicates_across_chunks(tmp_path: Path) -> None:
    """Batches written in several transactions still count each id once."""
    with tsmeter.connect(f"sqlite:///{tmp_path / 'c.db'}", chunk_size=2) as meter:
        meter.define_metric("storage", aggregation_type="SUM")
        batch = [*BATCH[:2], BATCH[1], *BATCH[2:]]  # b-1 again, at the start of chunk two
        result = meter.record_batch(batch)
        assert (result.recorded, result.duplicates) == (5, 1)
        assert meter.record_batch(batch).recorded == 0
        assert meter.get_usage_summary("storage", "org", "o1", at=T).record_count == 1
        assert len(meter.get_usage("storage")) == 5


def test_record_batch_rejects_non_objects(meter: Meter) -> None:
    """An item that is not an object names its position."""
    with pytest.raises(ValidationError) as caught:
        meter.record_batch([BATCH[0], 42])  # type: ignore[list-item]
    assert caught.value.field == "records[1]"
    assert stored_count(meter) == 0


def test_record_batch_accepts_both_spellings_and_models(meter: Meter) -> None:
    """Batches mix camelCase mappings, snake_case mappings and UsageRecord objects."""
    model = UsageRecord(
        id="m-1",
        metric_key="storage",
        subject_type="org",
        subject_id="o1",
        quantity=2,
        timestamp=T,
        metadata={"k": "v"},
    )
    result = meter.record_batch(
        [
            {
                "metricKey": "storage",
                "subjectType": "org",
                "subjectId": "o1",
                "quantity": 1,
                "timestamp": "2026-01-15T10:30:00Z",
                "id": "c-1",
                "orgId": None,
            },
            {
                "metric_key": "storage",
                "subject_type": "org",
                "subject_id": "o1",
                "quantity": 4,
                "timestamp": T,
                "id": "s-1",
                "source": "import",
            },
            model,
        ]
    )
    assert (result.recorded, result.duplicates) == (3, 0)
    records = {r.id: r for r in meter.get_usage("storage")}
    assert records["m-1"] == model
    assert records["s-1"].source == "import"
    assert meter.get_usage_summary("storage", "org", "o1", at=T).total_quantity == 7


# -- events ------------------------------------------------------------------------------------
def test_usage_events(meter: Meter) -> None:
    """record, record_batch and aggregate publish usage.recorded, usage.batch_recorded and
    usage.aggregated with what they did."""
    events = collect(meter)
    r = meter.record("api_calls", "org", "o1", timestamp=T, id="e-1")
    result = meter.record_batch([*BATCH, {**BATCH[0], "metricKey": "api_calls", "id": "e-1"}])
    agg = meter.aggregate("daily")
    assert [type(e) for e in events] == [UsageRecorded, UsageBatchRecorded, UsageAggregated]
    assert [e.name for e in events] == [
        "usage.recorded",
        "usage.batch_recorded",
        "usage.aggregated",
    ]
    assert events[0].record == r
    assert (result.recorded, result.duplicates) == (5, 1)
    assert events[1].result == result and events[1].metric_keys == {"storage", "api_calls"}
    assert events[2].result == agg and agg.period_type is PeriodType.DAILY
    assert agg.records_seen == 6
    assert all(e.occurred_at.tzinfo is not None for e in events)


def test_unsubscribe_and_failing_handlers(meter: Meter) -> None:
    """A failing handler neither stops other handlers nor the recording; unsubscribing stops
    delivery."""

    def boom(event: Event) -> None:
        raise RuntimeError("handler bug")

    meter.subscribe(UsageRecorded, boom)
    seen = collect(meter, UsageRecorded)
    meter.record("api_calls", "org", "o1", timestamp=T)
    assert len(seen) == 1 and stored_count(meter) == 1
    stop = meter.subscribe(UsageRecorded, seen.append)
    stop()
    meter.record("api_calls", "org", "o1", timestamp=T)
    assert len(seen) == 2  # only the first subscription


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
    assert doc["totalQuantity"] == 3 and doc["recordCount"] == 1
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
    assert docs[0] == exported.get_usage("storage")[0].to_json_dict()
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
