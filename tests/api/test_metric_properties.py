"""Metric bodies carry dimensions, the unique property and the time unit, against a real
``tsmeter serve`` on the embedded store and influxd: defined, read back and listed as sent;
bad values are problem+json naming the field inside the list (``dimensions[0].values[0]``)."""

from __future__ import annotations

from typing import Any

from tests.api.server import Served
from tests.api.test_server import problem

TOKENS = {
    "key": "tokens",
    "aggregationType": "sum",
    "dimensions": [
        {"name": "model", "maxValues": 50},
        {"name": "region", "values": ["eu", "us", 3, True]},
    ],
}


def _defined(served: Served, body: dict[str, Any]) -> dict[str, Any]:
    answer = served.post("/v1/metrics", json=body)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def test_new_fields_are_defined_read_and_listed(served: Served) -> None:
    """Each new field comes back as sent (enum names in any case, values of a closed set as
    text), on define, get and list; the defaults are shown when not sent."""
    tokens = _defined(served, TOKENS)
    assert tokens["dimensions"] == [
        {"name": "model", "maxValues": 50, "values": None},
        {"name": "region", "maxValues": 100, "values": ["eu", "us", "3", "true"]},
    ]
    assert tokens["uniqueProperty"] is None and tokens["timeUnit"] == "HOUR"
    mau = _defined(served, {"key": "mau", "aggregationType": "unique_count",
                            "uniqueProperty": "user_id"})  # fmt: skip
    assert (mau["aggregationType"], mau["uniqueProperty"]) == ("UNIQUE_COUNT", "user_id")
    gbh = _defined(served, {"key": "gb_days", "aggregation_type": "TIME_WEIGHTED_SUM",
                            "time_unit": "day", "unit": "GB",
                            "dimensions": [{"name": "tier", "max_values": 3}]})  # fmt: skip
    assert (gbh["aggregationType"], gbh["timeUnit"]) == ("TIME_WEIGHTED_SUM", "DAY")
    assert gbh["dimensions"] == [{"name": "tier", "maxValues": 3, "values": None}]
    for created in (tokens, mau, gbh):
        assert served.get(f"/v1/metrics/{created['key']}").json() == created
    listed = {m["key"]: m for m in served.get("/v1/metrics").json()["metrics"]}
    assert listed == {m["key"]: m for m in (tokens, mau, gbh)}


def test_bad_fields_are_named(served: Served) -> None:
    """Every refusal is 422 naming the field, down to the list item, and defines nothing."""
    cases = [
        ({"dimensions": [{"name": "a b"}]}, "dimensions[0].name"),
        ({"dimensions": [{"name": "a", "values": [1.5]}]}, "dimensions[0].values[0]"),
        ({"dimensions": [{"name": "a", "values": []}]}, "dimensions[0].values"),
        ({"dimensions": [{"name": "a", "values": ["x", "x"]}]}, "dimensions[0].values"),
        ({"dimensions": [{"name": "a"}, {"name": "a"}]}, "dimensions[1].name"),
        ({"dimensions": [{"name": "a", "maxValues": 0}]}, "dimensions[0].maxValues"),
        ({"dimensions": [{"name": "a", "maxValues": 10_001}]}, "dimensions[0].maxValues"),
        ({"dimensions": [{"name": "a", "colour": "red"}]}, "dimensions[0].colour"),
        ({"dimensions": [{"name": f"d{i}"} for i in range(9)]}, "dimensions"),
        ({"dimensions": "model"}, "dimensions"),
        ({"aggregationType": "UNIQUE_COUNT"}, "uniqueProperty"),
        ({"aggregationType": "UNIQUE_COUNT", "uniqueProperty": "user-id"}, "uniqueProperty"),
        ({"uniqueProperty": "user_id"}, "uniqueProperty"),
        ({"aggregationType": "TIME_WEIGHTED_SUM", "timeUnit": "WEEK"}, "timeUnit"),
        ({"aggregationType": "MEDIAN"}, "aggregationType"),
    ]
    for fields, field in cases:
        got = problem(served.post("/v1/metrics", json={"key": "k", **fields}), 422)
        assert [e["field"] for e in got["errors"]] == [field], (fields, got)
        assert got["detail"].startswith(f"{field}: "), got
    assert served.get("/v1/metrics").json() == {"metrics": []}


def test_fixed_fields_cannot_change(served: Served) -> None:
    """PATCH with other dimension names, unique property or time unit: 422 naming the field,
    nothing changed; the same values again are accepted."""
    tokens = _defined(served, TOKENS)
    mau = _defined(served, {"key": "mau", "aggregationType": "UNIQUE_COUNT",
                            "uniqueProperty": "user_id"})  # fmt: skip
    for key, change, field in (
        ("tokens", {"dimensions": [{"name": "model"}]}, "dimensions"),
        ("tokens", {"timeUnit": "DAY"}, "timeUnit"),
        ("mau", {"uniqueProperty": "session_id"}, "uniqueProperty"),
        ("mau", {"aggregationType": "SUM"}, "aggregationType"),
    ):
        got = problem(served.patch(f"/v1/metrics/{key}", json=change), 422)
        assert got["errors"][0]["field"].startswith(field), (change, got)
    assert served.get("/v1/metrics/tokens").json() == tokens
    assert served.get("/v1/metrics/mau").json() == mau
    same = served.patch("/v1/metrics/mau", json={"uniqueProperty": "user_id", "unit": "users"})
    assert same.status_code == 200, same.text
    assert same.json()["unit"] == "users"
