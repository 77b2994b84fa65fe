"""Meter behaviour through its public methods: metrics, recording and validation, events
(JSON, thresholds, export and org scopes: test_service_queries.py)."""

from __future__ import annotations

import io
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
    MetricDeleted,
    MetricUpdated,
    NotFoundError,
    PeriodType,
    UsageAggregated,
    UsageBatchRecorded,
    UsageRecord,
    UsageRecorded,
    ValidationError,
)

T = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)


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
        ({"quantity": "5 apples"}, "quantity"),
        ({"quantity": "0.0000001"}, "quantity"),  # more places than the metric keeps
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


@pytest.mark.parametrize("key", [1, ("t",), None, "quantiy"])
def test_record_batch_names_any_unknown_key(meter: Meter, key: Any) -> None:
    """Unknown keys of any type (not only strings, several at once) are a ValidationError
    naming one of them."""
    with pytest.raises(ValidationError) as caught:
        meter.record_batch([BATCH[0], {**BATCH[0], "id": "x", key: 1, "zz": 2}])
    named = key if isinstance(key, str) else repr(key)
    assert caught.value.field in (f"records[1].{named}", "records[1].zz")
    assert caught.value.problem == "unknown field"
    assert stored_count(meter) == 0


def test_validate_records_reports_each_problem(meter: Meter) -> None:
    """validate_records names the field of each bad record: bounds, depth, spellings, digits."""
    deep: dict[str, Any] = {}
    for _ in range(40):
        deep = {"k": deep}
    bad = [
        {**BATCH[0], "quantity": 2e15},
        {**BATCH[0], "metadata": deep},
        {**BATCH[0], "subject_id": "other"},
        {**BATCH[0], "timestamp": "2026-01-15T10:30:00.0000001Z"},
    ]
    problems = meter.validate_records([BATCH[0], *bad])
    assert problems[0] is None
    assert [p.field if p else None for p in problems[1:]] == [
        "quantity", "metadata", "subjectId", "timestamp"
    ]  # fmt: skip
    assert stored_count(meter) == 0


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


def test_record_sinks_see_stored_rows_and_cannot_fail_recording(meter: Meter) -> None:
    """Sinks get the rows of each call once stored; a failing sink is logged, not raised; a
    removed sink gets nothing more."""
    seen: list[list[str]] = []
    remove = meter.add_record_sink(lambda rows: seen.append([r.id for r in rows]))

    def broken(rows: object) -> None:
        raise RuntimeError("mirror down")

    meter.add_record_sink(broken)
    meter.record("api_calls", "org", "o1", id="a")
    meter.record_batch([{"metricKey": "api_calls", "subjectType": "org", "subjectId": "o1",
                         "id": i} for i in ("a", "b")])  # fmt: skip
    remove()
    meter.record("api_calls", "org", "o1", id="c")
    assert seen == [["a"], ["a", "b"]]
    assert meter.get_usage_summary("api_calls", "org", "o1", "YEARLY").total_quantity == 3
