"""A metric's declared properties through the service layer: errors of the new fields name
them, what cannot change after creation is refused naming the field (nothing changes), and a
BLOCK threshold is refused on a record-level metric."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import tsmeter
from tsmeter import Meter
from tsmeter.errors import ValidationError


@pytest.fixture
def meter() -> Iterator[Meter]:
    with tsmeter.connect("sqlite:///:memory:") as opened:
        opened.define_metric(
            "tokens",
            aggregation_type="SUM",
            dimensions=[
                {"name": "model", "max_values": 50},
                {"name": "region", "values": ["eu", "us"]},
            ],
        )
        opened.define_metric("mau", aggregation_type="UNIQUE_COUNT", unique_property="user_id")
        opened.define_metric("seats", aggregation_type="TIME_WEIGHTED_SUM", time_unit="DAY")
        yield opened


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"dimensions": [{"name": "user id"}]}, "dimensions[0].name", "must be a letter or _"),
        ({"dimensions": [{"name": "a"}, {"name": "a"}]}, "dimensions[1].name",
         "'a' is declared twice"),
        ({"dimensions": [{"name": "a", "values": ["x", 1.5]}]}, "dimensions[0].values[1]",
         "must be a string, an integer or a boolean, got float"),
        ({"dimensions": [{"name": "a", "max_values": 0}]}, "dimensions[0].max_values",
         "greater than or equal to 1"),
        ({"dimensions": [{"name": "a", "bound": 3}]}, "dimensions[0].bound", "Extra inputs"),
        ({"dimensions": [{"name": f"d{i}"} for i in range(9)]}, "dimensions", "at most 8"),
        ({"aggregation_type": "UNIQUE_COUNT"}, "uniqueProperty", "required for a UNIQUE_COUNT"),
        ({"unique_property": "user_id"}, "uniqueProperty", "only a UNIQUE_COUNT metric"),
        ({"time_unit": "WEEK"}, "timeUnit", "'SECOND', 'MINUTE', 'HOUR' or 'DAY'"),
    ],
)  # fmt: skip
def test_definition_errors_name_the_field(
    meter: Meter, fields: dict[str, Any], field: str, says: str
) -> None:
    """A bad dimension, unique property or time unit is a tsmeter ValidationError naming the
    field (a nested one by its path)."""
    with pytest.raises(ValidationError) as caught:
        meter.define_metric("other", **fields)
    assert caught.value.field == field
    assert says in caught.value.problem


@pytest.mark.parametrize(
    ("key", "changes", "field", "says"),
    [
        ("tokens", {"dimensions": [{"name": "model"}]}, "dimensions",
         "dimension names cannot change (metric 'tokens' declares model, region, asked model)"),
        ("tokens", {"dimensions": [{"name": "region", "values": ["eu", "us"]},
                                   {"name": "model"}]}, "dimensions", "cannot change"),
        ("tokens", {"dimensions": []}, "dimensions", "asked none"),
        ("tokens", {"aggregation_type": "UNIQUE_COUNT", "unique_property": "user_id"},
         "aggregationType", "cannot change from SUM to UNIQUE_COUNT"),
        ("tokens", {"aggregation_type": "UNIQUE_COUNT"}, "aggregationType",
         "cannot change from SUM to UNIQUE_COUNT"),
        ("tokens", {"aggregationType": "time_weighted_sum"}, "aggregationType",
         "cannot change from SUM to TIME_WEIGHTED_SUM"),
        ("mau", {"aggregation_type": "COUNT", "unique_property": None}, "aggregationType",
         "cannot change from UNIQUE_COUNT to COUNT"),
        ("seats", {"aggregation_type": "UNIQUE_COUNT", "unique_property": "x"},
         "aggregationType", "cannot change from TIME_WEIGHTED_SUM to UNIQUE_COUNT"),
        ("mau", {"unique_property": "account_id"}, "uniqueProperty",
         "cannot change from 'user_id' to 'account_id'"),
        ("seats", {"time_unit": "HOUR"}, "timeUnit", "cannot change from DAY to HOUR"),
        ("tokens", {"timeUnit": "MINUTE"}, "timeUnit", "cannot change from HOUR to MINUTE"),
    ],
)  # fmt: skip
def test_fixed_fields_cannot_change(
    meter: Meter, key: str, changes: dict[str, Any], field: str, says: str
) -> None:
    """Dimension names, the unique property, the time unit and a record-level aggregation
    type are fixed once the metric exists: a ValidationError naming the field, nothing
    changed."""
    before = meter.get_metric(key)
    with pytest.raises(ValidationError) as caught:
        meter.update_metric(key, **changes)
    assert caught.value.field == field
    assert says in caught.value.problem
    assert meter.get_metric(key) == before


def test_bounds_closed_sets_and_composable_types_can_change(meter: Meter) -> None:
    """A dimension's max_values and values change, and so does a type among the composable
    ones; the dimensions stay."""
    changed = meter.update_metric("tokens", aggregation_type="MAX", dimensions=[
        {"name": "model", "max_values": 500}, {"name": "region"}])  # fmt: skip
    assert changed.aggregation_type == "MAX"
    assert [(d.name, d.max_values, d.values) for d in changed.dimensions] == [
        ("model", 500, None), ("region", 100, None)]  # fmt: skip
    assert meter.update_metric("mau", unit="users").unique_property == "user_id"


@pytest.mark.parametrize("key", ["mau", "seats"])
def test_block_thresholds_are_refused_on_record_level_metrics(meter: Meter, key: str) -> None:
    """A quota adds records one at a time: BLOCK is refused on a distinct count or a
    time-weighted sum, at creation and on update; ALERT and WARN are fine."""
    with pytest.raises(ValidationError) as caught:
        meter.create_threshold(key, "org", 10, action="BLOCK")
    assert caught.value.field == "action"
    assert "quota enforcement adds records to the usage it holds one at a time" in str(caught.value)
    assert meter.list_thresholds(key) == []
    alert = meter.create_threshold(key, "org", 10, action="ALERT")
    with pytest.raises(ValidationError, match="BLOCK is not available"):
        meter.update_threshold(alert.id, action="block")
    assert meter.get_threshold(alert.id).action == "ALERT"
    assert meter.update_threshold(alert.id, action="WARN").action == "WARN"
    assert meter.create_threshold("tokens", "org", 10, action="BLOCK").action == "BLOCK"


def test_a_declared_block_threshold_on_a_record_level_metric_is_a_plan_problem(
    meter: Meter,
) -> None:
    """apply names the threshold's action and changes nothing."""
    doc = {"metrics": [{"key": "storage", "aggregation_type": "time_weighted_sum"}],
           "thresholds": [{"metric": "storage", "subject_type": "org", "limit": 5,
                           "action": "block"},
                          {"metric": "mau", "subject_type": "org", "limit": 5,
                           "action": "block"}]}  # fmt: skip
    with pytest.raises(ValidationError) as caught:
        meter.apply(doc)
    assert str(caught.value).startswith("<document>: thresholds[0].action: BLOCK is not")
    assert "thresholds[1].action: BLOCK is not available for UNIQUE_COUNT" in str(caught.value)
    assert sorted(m.key for m in meter.list_metrics()) == ["mau", "seats", "tokens"]
