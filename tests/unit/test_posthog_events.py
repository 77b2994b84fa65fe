"""PostHog settings and the pure event builders: names, properties, uuids, timestamps."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from types import SimpleNamespace

import pytest

from tsmeter.domain import (
    AggregationType,
    PeriodType,
    RecordRow,
    UsageAlert,
    UsageSummary,
    UsageThreshold,
)
from tsmeter.errors import ValidationError
from tsmeter.integrations.posthog.events import (
    NAMESPACE,
    CaptureEvent,
    correction_event,
    record_event,
    summary_event,
    summary_id,
    threshold_event,
)
from tsmeter.integrations.posthog.settings import PostHogSettings, parse_groups

T0 = 1_767_607_200_000_000_000  # 2026-01-05T10:00:00Z


def row(record_id: str = "req-1", **changes: object) -> RecordRow:
    """A stored row of 2.5 (units of precision 6)."""
    base = RecordRow(record_id, "api_calls", "org", "acme", None, 2_500_000, T0, None, "api")
    return base._replace(**changes)  # type: ignore[arg-type]


def event_of(
    r: RecordRow, settings: PostHogSettings, precision: int = 6, **kw: str
) -> CaptureEvent:
    return record_event(r, settings, precision=precision, **kw)


# -- settings --------------------------------------------------------------------------
def test_settings_from_env_read_every_variable() -> None:
    """Each TSMETER_POSTHOG_* variable lands in its field; empty ones are unset."""
    s = PostHogSettings.from_env({
        "TSMETER_POSTHOG_API_KEY": "phc_abcdefghij", "TSMETER_POSTHOG_HOST": "https://eu.i.posthog.com/",
        "TSMETER_POSTHOG_EVENT_PREFIX": "usage", "TSMETER_POSTHOG_GROUPS": "org=company,team=team",
        "TSMETER_POSTHOG_GZIP": "false", "TSMETER_POSTHOG_FLUSH_INTERVAL": "0.5",
        "TSMETER_POSTHOG_BATCH_SIZE": "100", "TSMETER_POSTHOG_RETRIES": "3",
        "TSMETER_POSTHOG_BUFFER_SIZE": "1000", "TSMETER_POSTHOG_PROJECT_ID": "1234",
        "TSMETER_POSTHOG_PERSONAL_API_KEY": "phx_secretsecret", "TSMETER_POSTHOG_STATE": "",
    })  # fmt: skip
    assert (
        s.enabled
        and s.host == "https://eu.i.posthog.com"
        and s.app_host == ("https://eu.posthog.com")
    )
    assert (s.event_prefix, dict(s.groups), s.gzip, s.flush_interval) == (
        "usage", {"org": "company", "team": "team"}, False, 0.5,
    )  # fmt: skip
    assert (s.batch_size, s.retries, s.buffer_size, s.project_id, s.state_path) == (
        100, 3, 1000, "1234", None,
    )  # fmt: skip
    assert "phc_abcdefghij" not in repr(s) and "phx_secretsecret" not in repr(s)
    assert s.describe()["api_key"] == "phc_***"


def test_the_mirror_is_off_without_a_key() -> None:
    """No key, no mirror; the defaults are PostHog Cloud US and the ``metering`` prefix."""
    s = PostHogSettings.from_env({})
    assert not s.enabled
    assert (s.host, s.event_prefix, dict(s.groups)) == (
        "https://us.i.posthog.com", "metering", {"org": "company"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TSMETER_POSTHOG_EVENT_PREFIX", "Metering"),
        ("TSMETER_POSTHOG_EVENT_PREFIX", "metering'--"),
        ("TSMETER_POSTHOG_EVENT_PREFIX", "a" * 33),
        ("TSMETER_POSTHOG_HOST", "ftp://example.com"),
        ("TSMETER_POSTHOG_HOST", "https://example.com/?x=1"),
        ("TSMETER_POSTHOG_GROUPS", "org"),
        ("TSMETER_POSTHOG_GROUPS", "org=Company"),
        ("TSMETER_POSTHOG_GROUPS", "a=g1,b=g2,c=g3,d=g4,e=g5,f=g6"),
        ("TSMETER_POSTHOG_BATCH_SIZE", "0"),
        ("TSMETER_POSTHOG_FLUSH_INTERVAL", "nan"),
        ("TSMETER_POSTHOG_GZIP", "maybe"),
        ("TSMETER_POSTHOG_PROJECT_ID", "12/../34"),
        ("TSMETER_POSTHOG_API_KEY", "phc x"),
    ],
)
def test_bad_settings_name_their_variable(variable: str, value: str) -> None:
    """A bad value is a ValidationError naming the environment variable."""
    with pytest.raises(ValidationError) as info:
        PostHogSettings.from_env({variable: value})
    assert info.value.field == variable


def test_groups_none_disables_them() -> None:
    """``none`` maps no subject type to a group."""
    assert parse_groups("none") == {}
    assert dict(PostHogSettings.from_env({"TSMETER_POSTHOG_GROUPS": "none"}).groups) == {}


# -- records ---------------------------------------------------------------------------
def test_a_record_becomes_usage_recorded() -> None:
    """Name, distinct id, uuid from the record id, aware UTC timestamp, properties, groups."""
    event = event_of(row(org_id="acme-org"), PostHogSettings(), unit="calls")
    assert event.name == "metering.usage_recorded"
    assert event.uuid == str(uuid.uuid5(NAMESPACE, "metering.usage_recorded:req-1"))
    assert event.distinct_id == "org:acme"
    assert event.timestamp == datetime(2026, 1, 5, 10, tzinfo=UTC)
    assert event.timestamp.utcoffset() == timedelta(0)
    assert dict(event.properties) == {
        "metricKey": "api_calls", "subjectType": "org", "subjectId": "acme", "quantity": 2.5,
        "units": 2_500_000, "precision": 6, "unit": "calls", "recordId": "req-1",
        "source": "api", "orgId": "acme-org", "$process_person_profile": False,
    }  # fmt: skip
    assert dict(event.groups) == {"company": "acme"}  # the subject wins over its org


def test_record_uuids_depend_on_the_record_id_and_prefix_only() -> None:
    """A retry (same id, even re-timestamped) is the same event; another id or prefix is not."""
    settings = PostHogSettings()
    first = event_of(row(), settings)
    assert event_of(row(ts=T0 + 5), settings).uuid == first.uuid
    assert event_of(row("req-2"), settings).uuid != first.uuid
    other = PostHogSettings(event_prefix="usage")
    assert event_of(row(), other).uuid != first.uuid


def test_groups_and_metadata_follow_the_settings() -> None:
    """An org-scoped record of a user gets its org as the company group; metadata only when
    asked for."""
    settings = PostHogSettings(groups={"org": "company", "user": "person_group"},
                               include_metadata=True)  # fmt: skip
    event = event_of(row(subject_type="user", subject_id="u1", org_id="acme",
                         metadata='{"region":"eu"}'), settings)  # fmt: skip
    assert dict(event.groups) == {"company": "acme", "person_group": "u1"}
    assert event.properties["metadata"] == {"region": "eu"}
    assert "metadata" not in event_of(row(metadata='{"a":1}'), PostHogSettings()).properties


def test_events_survive_the_journal_round_trip() -> None:
    """to_json/from_json give the same event (what a restarted mirror sends)."""
    event = event_of(row(), PostHogSettings(), unit="calls")
    assert CaptureEvent.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    ("units", "precision", "text"),
    [
        (1, 1, "0.1"), (100_000, 6, "0.1"), (-5, 2, "-0.05"), (0, 6, "0"), (7, 0, "7"),
        (2**63 - 1, 0, str(2**63 - 1)), (-(2**63 - 1), 12, "-9223372.036854775807"),
        (123_456_789_012_345_678, 6, "123456789012.345678"), (1, 12, "1E-12"),
    ],
)  # fmt: skip
def test_quantities_travel_as_units_and_precision(units: int, precision: int, text: str) -> None:
    """``units`` and ``precision`` carry the quantity exactly, through the journal's JSON too;
    ``quantity`` is the JSON number nearest to it (an int when whole and within 2**53)."""
    event = event_of(row(quantity=units), PostHogSettings(), precision=precision)
    exact = Decimal(text)
    assert Decimal(event.properties["units"]).scaleb(-precision) == exact
    assert event.properties["precision"] == precision
    doc = json.loads(event.to_json())["properties"]
    assert (doc["units"], doc["precision"]) == (units, precision)
    quantity = doc["quantity"]
    assert type(quantity) is (
        int if exact == exact.to_integral() and abs(exact) <= 2**53 else float
    )
    assert quantity == float(exact) if isinstance(quantity, float) else Decimal(quantity) == exact
    assert CaptureEvent.from_json(event.to_json()) == event


def test_a_record_needs_int_units_and_a_precision() -> None:
    """A float quantity (a row of an earlier version) or a missing or bad precision is a
    programming error, never a guess."""
    with pytest.raises(TypeError, match="units"):
        event_of(row(quantity=2.5), PostHogSettings())
    with pytest.raises(TypeError):
        record_event(row(), PostHogSettings())  # type: ignore[call-arg]
    for bad in (-1, 13):
        with pytest.raises(ValueError, match="precision"):
            event_of(row(), PostHogSettings(), precision=bad)


# -- summaries and thresholds ----------------------------------------------------------
def summary(
    total: str = "4", count: int = 4, tz: str = "UTC",
    aggregation: AggregationType = AggregationType.COUNT, sum_: str = "4.000000",
) -> UsageSummary:  # fmt: skip
    return UsageSummary(
        metric_key="api_calls", subject_type="org", subject_id="acme", period_type="DAILY",
        period_start=datetime(2026, 1, 5, tzinfo=UTC), period_end=datetime(2026, 1, 6, tzinfo=UTC),
        timezone=tz, aggregation_type=aggregation, total_quantity=Decimal(total),
        record_count=count, sum=Decimal(sum_), min=Decimal("1.000000"),
        max=Decimal("1.000000"), last_value=Decimal("1.000000"),
        last_timestamp=datetime(2026, 1, 5, 10, tzinfo=UTC),
    )  # fmt: skip


def test_a_summary_becomes_usage_aggregated() -> None:
    """Period fields, totals and the period start as the timestamp."""
    at = datetime(2026, 1, 6, 0, 5, tzinfo=UTC)
    event = summary_event(summary(), PostHogSettings(), unit="calls", computed_at=at)
    assert event.name == "metering.usage_aggregated"
    assert event.timestamp == datetime(2026, 1, 5, tzinfo=UTC)
    p = event.properties
    assert (p["periodType"], p["periodStart"], p["periodEnd"], p["totalQuantity"]) == (
        "DAILY", "2026-01-05T00:00:00+00:00", "2026-01-06T00:00:00+00:00", 4,
    )  # fmt: skip
    assert (p["totalUnits"], p["precision"]) == (4_000_000, 6)  # a COUNT at precision 6
    json.loads(event.to_json())  # no Decimal left in the properties
    assert (p["recordCount"], p["unit"], p["computedAt"], p["$process_person_profile"]) == (
        4, "calls", at.isoformat(), False,
    )  # fmt: skip


def test_summary_uuids_follow_identity_and_values() -> None:
    """The same summary is the same event (whenever computed); other values make a new
    event with the same summaryId; another zone is another summary."""
    settings = PostHogSettings()
    a = summary_event(summary(), settings, computed_at=datetime(2026, 1, 6, tzinfo=UTC))
    b = summary_event(summary(), settings, computed_at=datetime(2026, 2, 1, tzinfo=UTC))
    c = summary_event(summary(total="5", count=5), settings)
    assert a.uuid == b.uuid and a.uuid != c.uuid
    assert a.properties["summaryId"] == c.properties["summaryId"] == summary_id(summary())
    assert summary_id(summary(tz="Europe/Paris")) != summary_id(summary())


def test_summary_values_are_exact_and_uuids_stable() -> None:
    """A SUM summary carries its total as a chart number and exact units; the uuid of a
    summary whose values a float holds is the one earlier versions derived (from the floats'
    reprs), and values a float cannot tell apart give different uuids."""
    settings = PostHogSettings()
    exact = summary(total="0.300000", aggregation=AggregationType.SUM, sum_="0.300000")
    event = summary_event(exact, settings, precision=6)
    assert (event.properties["totalQuantity"], event.properties["totalUnits"]) == (0.3, 300_000)
    sid = summary_id(exact)
    old_values = json.dumps(["0.3", 4, "0.3", "1.0", "1.0", "1.0", "2026-01-05T10:00:00+00:00"])
    assert event.uuid == str(uuid.uuid5(NAMESPACE, f"metering.usage_aggregated:{sid}:{old_values}"))
    near = [
        summary(total=t, aggregation=AggregationType.SUM, sum_=t)
        for t in ("1234567.890123456788", "1234567.890123456789")
    ]
    assert float(near[0].sum) == float(near[1].sum)  # one float for both
    a, b = (summary_event(x, settings, precision=12) for x in near)
    assert (a.properties["totalUnits"], b.properties["totalUnits"]) == (
        1_234_567_890_123_456_788, 1_234_567_890_123_456_789,
    )  # fmt: skip
    assert a.uuid != b.uuid
    assert summary_event(exact, settings).properties["precision"] == 6  # from the sum's places


def test_threshold_events_carry_the_alert() -> None:
    """``threshold.exceeded`` → ``metering.threshold_exceeded`` with the alert's fields, a uuid
    from the alert id and the alert's creation time (aware UTC)."""
    threshold = UsageThreshold(metric_key="api_calls", subject_type="org", subject_id="acme",
                               threshold=100, action="BLOCK", org_id="acme")  # fmt: skip
    created = datetime(2026, 1, 5, 12, tzinfo=timezone(timedelta(hours=2)))
    alert = UsageAlert(threshold_id=threshold.id, metric_key="api_calls", subject_type="org",
                       subject_id="acme", level="exceeded", period_start=None, period_end=None,
                       actual_value=120, threshold_value=100, percentage=120,
                       created_at=created)  # fmt: skip
    event = threshold_event("threshold.exceeded", alert, threshold, PostHogSettings(), unit="c")
    assert event.name == "metering.threshold_exceeded"
    assert event.uuid == str(uuid.uuid5(NAMESPACE, f"metering.threshold_exceeded:{alert.id}"))
    assert event.timestamp == created and event.timestamp.tzinfo == UTC
    p = event.properties
    assert (p["alertId"], p["thresholdId"], p["actualValue"], p["percentage"]) == (
        alert.id, threshold.id, 120, 120,
    )  # fmt: skip
    assert (p["actualValueExact"], p["thresholdValueExact"]) == ("120", "100")
    json.loads(event.to_json())
    assert (p["action"], p["orgId"], p["level"]) == ("BLOCK", "acme", "exceeded")
    resolved = threshold_event("threshold.resolved", alert, threshold, PostHogSettings())
    assert resolved.name == "metering.threshold_resolved" and resolved.uuid != event.uuid
    with pytest.raises(ValueError):
        threshold_event("usage.recorded", alert, threshold, PostHogSettings())


def test_period_type_enum_is_sent_by_value() -> None:
    """Enums go out as their plain values."""
    event = summary_event(summary(), PostHogSettings())
    assert event.properties["periodType"] == PeriodType.DAILY.value == "DAILY"


def test_record_events_carry_dimension_values() -> None:
    """``dim_<name>`` for each dimension: the value as tsmeter keeps it, null where the record
    has none or one recording refuses; metadata itself only with include_metadata."""
    meta = json.dumps({"model": 'a, "b"=c\\', "seats": 3, "beta": False, "x": 1.5})
    event = record_event(row(metadata=meta), PostHogSettings(), precision=6,
                         dimensions=("model", "seats", "beta", "region", "x"))  # fmt: skip
    assert {k: v for k, v in event.properties.items() if k.startswith("dim_")} == {
        "dim_model": 'a, "b"=c\\', "dim_seats": "3", "dim_beta": "false", "dim_region": None,
        "dim_x": None,
    }  # fmt: skip
    assert "metadata" not in event.properties
    plain = record_event(row(metadata=meta), PostHogSettings(), precision=6)
    assert not any(k.startswith("dim_") for k in plain.properties)
    assert plain.uuid == event.uuid


class Kind(StrEnum):
    CANCEL = "CANCEL"
    AMEND = "AMEND"


def correction(**changes: object) -> SimpleNamespace:
    base = {"id": "corr-1", "record_id": "req-1", "kind": Kind.CANCEL,
            "quantity_before": Decimal("2.5"), "quantity_after": None, "reason": "duplicate",
            "actor": "ops@example.com", "corrected_at": datetime(2026, 1, 6, tzinfo=UTC),
            "metric_key": "api_calls", "subject_type": "org", "subject_id": "acme",
            "org_id": "acme", "record_timestamp": T0}  # fmt: skip
    return SimpleNamespace(**{**base, **changes})


def test_correction_events() -> None:
    """A cancel's after is 0; quantities are exact decimal strings at the precision; the uuid
    comes from the correction id; the time is the record's (ns or datetime); a kind other
    than CANCEL/AMEND and a quantity with more places than the metric are refused."""
    metric = SimpleNamespace(unit="calls", precision=3)
    settings = PostHogSettings(event_prefix="billing", groups=parse_groups("org=company"))
    e = correction_event(correction(), metric, settings)
    assert e.name == "billing.usage_corrected" and e.kind == "correction"
    assert e.uuid == str(uuid.uuid5(NAMESPACE, "billing.usage_corrected:corr-1"))
    assert e.timestamp == datetime(2026, 1, 5, 10, tzinfo=UTC)
    assert e.groups == {"company": "acme"} and e.distinct_id == "org:acme"
    p = e.properties
    assert (p["kind"], p["quantityBefore"], p["quantityAfter"], p["unit"]) == (
        "CANCEL",
        "2.500",
        "0.000",
        "calls",
    )
    assert p["correctedAt"] == "2026-01-06T00:00:00+00:00" and "actor" not in p
    amend = correction_event(
        correction(kind="amend", quantity_after=Decimal("1E+3"),
                   record_timestamp=datetime(2026, 1, 5, 10, tzinfo=UTC)), metric
    )  # fmt: skip
    assert (amend.properties["kind"], amend.properties["quantityAfter"]) == ("AMEND", "1000.000")
    assert amend.timestamp == e.timestamp
    with pytest.raises(ValueError, match="CANCEL or AMEND"):
        correction_event(correction(kind="UNDO"), metric)
    with pytest.raises(ValidationError, match="quantityAfter"):
        correction_event(correction(kind="AMEND", quantity_after=Decimal("0.0001")), metric)
