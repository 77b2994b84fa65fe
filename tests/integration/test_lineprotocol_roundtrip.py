"""Hostile strings, every 64-bit integer of units and every kind of double go through a real
influxd and come back unchanged."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile import NASTY_NAMES, names, quantities, record_rows, same_float
from tests.influx_server import InfluxServer
from tsmeter.adapters.influxdb.lineprotocol import (
    UsageEncoder,
    decode_tag,
    encode_point,
    tag_value,
)
from tsmeter.domain import RecordRow

pytestmark = pytest.mark.influxdb

START = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z: every point lands in one shard
_measurements = (f"m{n}" for n in itertools.count())

SERVER_TEST = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def db(influxd: InfluxServer) -> Iterator[tuple[InfluxServer, str]]:
    """One scratch database for this module (each example writes its own measurement)."""
    name = "lineprotocol_roundtrip"
    influxd.create_database(name)
    try:
        yield influxd, name
    finally:
        influxd.drop_database(name)


def write_ok(server: InfluxServer, db: str, body: bytes) -> None:
    """Write line protocol and require a clean 204 (no partial write)."""
    answer = server.write(db, body)
    assert answer.status_code == 204, answer.text


def rows_by_time(server: InfluxServer, db: str, measurement: str) -> dict[int, dict[str, Any]]:
    """Every point of ``measurement`` as a column -> value dict, keyed by its time."""
    rows = server.series(f'SELECT * FROM "{measurement}" WHERE time >= 0', db)
    by_time = {r["time"]: r for r in rows}
    assert len(by_time) == len(rows)
    return by_time


def check_usage_point(point: dict[str, Any], row: RecordRow, writer: str) -> None:
    """A point read back holds exactly the row's names, id, metadata, source and units."""
    assert decode_tag(point["metric"]) == row.metric_key
    assert decode_tag(point["subject_type"]) == row.subject_type
    assert decode_tag(point["subject_id"]) == row.subject_id
    assert (None if point.get("org") is None else decode_tag(point["org"])) == row.org_id
    assert decode_tag(point["w"]) == writer
    assert point["rid"] == row.id
    assert point.get("metadata") == row.metadata
    assert point.get("source") == row.source
    assert point["tsn"] == row.ts
    assert type(point["units"]) is int and point["units"] == row.quantity, point["units"]
    assert "quantity" not in point


@SERVER_TEST
@given(rows=st.integers(1, 40).flatmap(lambda n: record_rows(n, START)), writer=names)
def test_usage_rows_roundtrip(
    db: tuple[InfluxServer, str], rows: list[RecordRow], writer: str
) -> None:
    """Rows with hostile tags, ids, metadata and sources come back byte for byte."""
    server, name = db
    measurement = next(_measurements)
    rows = [r._replace(quantity=(-1) ** i * 13 ** (i % 17)) for i, r in enumerate(rows)]  # units
    write_ok(server, name, UsageEncoder(measurement, writer=writer).encode(rows))
    points = rows_by_time(server, name, measurement)
    assert sorted(points) == [r.ts for r in rows]
    for row in rows:
        check_usage_point(points[row.ts], row, writer)
    # A tag compared in its stored form (tag_value) through a bind parameter finds the point.
    found = server.series(
        f'SELECT rid FROM "{measurement}" WHERE subject_id = $s AND time >= 0',
        name,
        params={"s": tag_value(rows[0].subject_id)},
    )
    assert rows[0].id in {p["rid"] for p in found}


UNITS = st.integers(-(2**63) + 1, 2**63 - 1)


@SERVER_TEST
@given(st.lists(UNITS, min_size=1, max_size=300))
def test_units_roundtrip_exactly(db: tuple[InfluxServer, str], values: list[int]) -> None:
    """Every integer of units a record may hold reads back as the same int."""
    server, name = db
    measurement = next(_measurements)
    rows = [
        RecordRow("r", "q", "org", "o", None, v, START + i, None, None)
        for i, v in enumerate(values)
    ]
    write_ok(server, name, UsageEncoder(measurement).encode(rows))
    points = rows_by_time(server, name, measurement)
    for i, value in enumerate(values):
        got = points[START + i]["units"]
        assert type(got) is int and got == value, (got, value)


def test_edge_units_roundtrip(db: tuple[InfluxServer, str]) -> None:
    """The integers at the edges of the 64-bit range (and past a double's exact integers)
    come back exactly."""
    edges = [
        0, 1, -1, 2**63 - 1, -(2**63) + 1, -(2**63), 2**53, 2**53 + 1, -(2**53) - 1,
        10**18 + 1, 123456789012345678, 9_223_372_036_854_775_806, 100_000,
    ]  # fmt: skip
    server, name = db
    rows = [
        RecordRow("r", "q", "org", "o", None, v, START + i, None, None) for i, v in enumerate(edges)
    ]
    write_ok(server, name, UsageEncoder("edges").encode(rows))
    points = rows_by_time(server, name, "edges")
    for i, value in enumerate(edges):
        assert points[START + i]["units"] == value, (i, value)


def test_json_reply_keeps_every_double_but_needs_care_for_minus_zero(
    influx_db: tuple[InfluxServer, str],
) -> None:
    """InfluxDB's JSON writes doubles in shortest round-trip form; only -0.0 needs a parse hook."""
    server, name = influx_db
    values = [-0.0, 5e-324, 1.7976931348623157e308, 0.1, 3.0, 1e21, -4.121318359536493e16]
    body = "".join(f"f v={v!r} {i + 1}\n" for i, v in enumerate(values)).encode()
    write_ok(server, name, body)
    raw = requests.post(
        f"{server.url}/query", data={"q": "SELECT v FROM f", "db": name, "epoch": "ns"}, timeout=30
    ).text
    plain = [row[1] for row in json.loads(raw)["results"][0]["series"][0]["values"]]
    # Plain json.loads: every value is the same double, but -0 arrives as the integer 0 and
    # integral doubles arrive as ints.
    assert [float(v) for v in plain] == values
    assert plain[0] == 0 and isinstance(plain[0], int)
    assert isinstance(plain[4], int)
    # Integral doubles from 2**53 up to 1e21 arrive as shortest digits padded with zeros: as a
    # Python int that is not the double's value (== fails), float() of it is exact.
    assert plain[6] == -41213183595364930 and plain[6] != values[6]
    # The helper's parse hook keeps the sign of zero.
    kept = [r["v"] for r in server.series("SELECT v FROM f", name)]
    assert same_float(kept[0], -0.0)
    assert all(same_float(float(k), v) for k, v in zip(kept, values, strict=True))


def test_metadata_with_newlines_stays_one_point(db: tuple[InfluxServer, str]) -> None:
    """Metadata whose strings hold newlines is one point per record, read back as written."""
    server, name = db
    measurement = next(_measurements)
    text = json.dumps({"note": "line 1\nline 2\r\n", "k\n": ["\n"]}, separators=(",", ":"))
    rows = [
        RecordRow(f"r{i}", "m", "org", "o", None, 10**6, START + i, text, None) for i in range(3)
    ]
    write_ok(server, name, UsageEncoder(measurement).encode(rows))
    points = rows_by_time(server, name, measurement)
    assert [p["metadata"] for p in points.values()] == [text] * 3


@pytest.mark.parametrize("value", NASTY_NAMES)
def test_nasty_names_roundtrip_everywhere(db: tuple[InfluxServer, str], value: str) -> None:
    """Each hand-picked nasty name survives as every tag, as the id and as the source."""
    server, name = db
    measurement = next(_measurements)
    row = RecordRow(
        value, value, value, value, value, 2_500_000, START, json.dumps({value: value}), value
    )
    write_ok(server, name, UsageEncoder(measurement, writer=value).encode([row]))
    check_usage_point(rows_by_time(server, name, measurement)[START], row, value)


_tag_keys = names.filter(lambda k: k != "ime")  # "t" + "ime" would be the reserved key time
_field_keys = names


@SERVER_TEST
@given(
    tags=st.dictionaries(_tag_keys, names, min_size=1, max_size=6),
    strings=st.dictionaries(_field_keys, names, min_size=1, max_size=6),
    numbers=st.lists(quantities, min_size=1, max_size=6),
    integer=st.integers(-(2**63), 2**63 - 1),
    flag=st.booleans(),
)
def test_encode_point_roundtrip(
    db: tuple[InfluxServer, str],
    tags: dict[str, str],
    strings: dict[str, str],
    numbers: list[float],
    integer: int,
    flag: bool,
) -> None:
    """Hostile tag keys and values and string fields written by encode_point come back exactly."""
    server, name = db
    measurement = next(_measurements)
    tags = {f"t{k}": v for k, v in tags.items()}
    fields: dict[str, object] = {f"s{k}": v for k, v in strings.items()}
    fields.update({f"n{i}": v for i, v in enumerate(numbers)})
    fields.update({"int": integer, "flag": flag})
    write_ok(server, name, (encode_point(measurement, tags, fields, START) + "\n").encode())
    (point,) = rows_by_time(server, name, measurement).values()
    decoded = {decode_tag(k): v for k, v in point.items() if k != "time"}
    for key, value in tags.items():
        assert decode_tag(decoded.pop(key)) == value
    for key, value in fields.items():
        got = decoded.pop(key)
        if isinstance(value, float):
            assert same_float(float(got), value)
        else:
            assert got == value and type(got) is type(value)
    assert decoded == {}


def test_field_key_with_backslash_before_quote(influx_db: tuple[InfluxServer, str]) -> None:
    """A field key holding a backslash before a double quote reads back unchanged."""
    server, name = influx_db
    write_ok(server, name, (encode_point("m", {}, {'k\\"': "x"}, START) + "\n").encode())
    (point,) = rows_by_time(server, name, "m").values()
    assert [decode_tag(k) for k in point if k != "time"] == ['k\\"']
