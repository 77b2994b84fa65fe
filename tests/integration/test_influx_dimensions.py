"""A metric's dimensions as tags ``dim.<name>`` on raw usage points, on a real influxd: hostile
values are data (they read back exactly through InfluxQL ``GROUP BY "dim.<name>"``), records
of one subject at one instant in different dimension series never collapse, and retries land
once."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import tsmeter
from tests.influx2_server import Influx2Server
from tests.influx_server import InfluxServer
from tsmeter.adapters.influxdb.client import series_rows
from tsmeter.adapters.influxdb.lineprotocol import decode_tag
from tsmeter.adapters.influxdb.store import InfluxStore
from tsmeter.adapters.sqlite import SQLiteStore
from tsmeter.domain import MetricDefinition, PeriodType, RecordRow
from tsmeter.domain.periods import Calendar
from tsmeter.ports import SummaryQuery

T = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
START = datetime(2026, 1, 1, tzinfo=UTC)
DAY = 86_400_000_000_000
ALT = "\u29f5"

#: values that line protocol and InfluxQL give a meaning to, as data
HOSTILE = [
    "gpt-4o, mini",
    "a b",
    'say "hi"',
    "it's",
    "k=v",
    "back\\slash",
    "trailing\\",
    "\\,\\=\\ ",
    "a\\\\",
    ALT,
    f"x{ALT}\\",
    "Zürich 東京 🚀",
    "#hash",
    "$param",
    "/regex/",
    "-- comment",
    " lead",
]


def url(server: InfluxServer, db: str, writer: str = "w1", state: str = "") -> str:
    """The store URL of ``db`` (``state``: the SQLite state file of a Meter)."""
    return f"influxdb://127.0.0.1:{server.port}/{db}?writer={writer}" + (
        f"&state={state}" if state else ""
    )


def grouped(server: InfluxServer, db: str, name: str, metric: str) -> dict[str | None, int]:
    """Points per value of tag ``dim.<name>`` (decoded; None: points without the tag)."""
    query = (
        f'SELECT count("units") FROM "usage" WHERE "metric" = \'{metric}\' GROUP BY "dim.{name}"'
    )
    (result,) = server.query(query, db=db)["results"]
    out: dict[str | None, int] = {}
    for tags, values in series_rows(result):
        stored = tags.get(f"dim.{name}") or ""
        out[decode_tag(stored) if stored else None] = int(values["count"])
    return out


def points(server: InfluxServer, db: str) -> int:
    (result,) = server.query('SELECT count("units") FROM "usage"', db=db)["results"]
    found = series_rows(result)
    return int(found[0][1]["count"]) if found else 0


def a_record(rid: str, metric: str, metadata: dict[str, Any], us: int = 0) -> dict[str, Any]:
    """A record of subject org o1, ``us`` microseconds after START."""
    return {"id": rid, "metricKey": metric, "subjectType": "org", "subjectId": "o1",
            "quantity": 1, "timestamp": START + timedelta(microseconds=us),
            "metadata": metadata}  # fmt: skip


def tokens_metric(**extra: Any) -> dict[str, Any]:
    return {"aggregation_type": "SUM", "dimensions": [{"name": "model", "max_values": 1000},
                                                      {"name": "region"}], **extra}  # fmt: skip


def test_hostile_dimension_values_round_trip_as_tags(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """Every hostile value is one tag value reading back as itself; a record without the
    property has no tag; integers and booleans are kept as text; a metric without dimensions
    gets no dim tag."""
    server, db = influx_db
    location = url(server, db, state=str(tmp_path / "s.db"))
    with tsmeter.connect(location, mirror=False, outbox=False) as meter:
        meter.define_metric("tokens", **tokens_metric())
        meter.define_metric("plain", aggregation_type="SUM")
        records = [
            a_record(f"h{i}-{k}", "tokens", {"model": value, "region": i}, i)
            for i, value in enumerate(HOSTILE)
            for k in range(i % 3 + 1)  # 1 to 3 records per value
        ]
        records.append(a_record("none", "tokens", {"other": "x"}))
        records.append(a_record("bool", "tokens", {"model": True}))
        records.append(a_record("p", "plain", {"model": "x"}))
        result = meter.record_batch(records)
        assert result.recorded == len(records)
    expected: Counter[str | None] = Counter()
    for sent in records[:-1]:
        value = sent["metadata"].get("model")
        expected[None if value is None else ("true" if value is True else value)] += 1
    assert grouped(server, db, "model", "tokens") == dict(expected)
    regions = grouped(server, db, "region", "tokens")
    assert regions == {**{str(i): i % 3 + 1 for i in range(len(HOSTILE))}, None: 2}
    assert grouped(server, db, "model", "plain") == {None: 1}
    (result,) = server.query('SHOW TAG KEYS FROM "usage"', db=db)["results"]
    keys = {str(values["tagKey"]) for _, values in series_rows(result)}
    assert {"dim.model", "dim.region"} <= keys


def test_ten_thousand_records_at_one_instant_across_dimension_values_never_collapse(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """10,000 records of one subject at one nanosecond, spread over dimension values (and
    some without a value), are 10,000 points; per value the counts and the monthly summary
    match an independent count; sending them again (here and from another writer with its
    own ledger) adds nothing."""
    server, db = influx_db
    values = [*HOSTILE, None]
    batch = []
    for i in range(10_000):
        value = values[i % len(values)]
        metadata = json.dumps({} if value is None else {"model": value})
        batch.append(RecordRow(f"r{i:05d}", "tokens", "org", "o1", None, (i % 7 + 1) * 10**6,
                               T, metadata, None))  # fmt: skip
    metric = MetricDefinition.model_validate({"key": "tokens", **tokens_metric()})
    first = InfluxStore.from_url(url(server, db), ledger=str(tmp_path / "a.db"))
    other = InfluxStore.from_url(url(server, db, "w2"), ledger=str(tmp_path / "b.db"))
    try:
        first.know_metrics([metric])
        other.know_metrics([metric])
        assert first.append(batch, 0) == 10_000
        assert first.append(batch, 0) == 0
        assert other.append(list(reversed(batch)), 0) == 0
        assert first.append(batch[:10], 0) == 0
        (summary,) = first.summaries(
            SummaryQuery("tokens", PeriodType.MONTHLY, T, T + DAY), Calendar()
        )
        expected_sum = sum((i % 7 + 1) * 10**6 for i in range(10_000))
        assert (summary.record_count, summary.sum) == (10_000, expected_sum)
        got = sorted(first.iter_records(_query()), key=lambda r: r.id)
        assert got == sorted(batch, key=lambda r: r.id)
    finally:
        first.close()
        other.close()
    assert points(server, db) == 10_000
    counts: Counter[str | None] = Counter(values[i % len(values)] for i in range(10_000))
    assert grouped(server, db, "model", "tokens") == dict(counts)


def _query() -> Any:
    from tsmeter.ports import RecordQuery

    return RecordQuery("tokens", start=T, end=T + 1)


def test_a_metric_defined_after_the_store_opened_writes_its_dimensions(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """A metric defined through the open Meter, and one defined by another process (straight
    in the catalog), have their dimension tags from their first record on; a retried record
    lands once."""
    server, db = influx_db
    state = str(tmp_path / "s.db")
    with tsmeter.connect(url(server, db, state=state), mirror=False, outbox=False) as meter:
        meter.define_metric("here", **tokens_metric())
        elsewhere = SQLiteStore(state)  # another process's catalog connection
        try:
            elsewhere.add_metric(
                MetricDefinition.model_validate({"key": "there", **tokens_metric()})
            )
        finally:
            elsewhere.close()
        for key in ("here", "there"):
            for attempt in range(2):  # the second is a retry of the same records
                stored = meter.record_batch([
                    {"id": f"{key}-{i}", "metricKey": key, "subjectType": "org",
                     "subjectId": "o1", "quantity": "1.5", "timestamp": START,
                     "metadata": {"model": f"m {i % 2}", "region": "eu"}}
                    for i in range(6)
                ])  # fmt: skip
                assert (stored.recorded, stored.duplicates) == (
                    (6, 0) if attempt == 0 else (0, 6)
                ), (key, attempt)
        (summary,) = meter.get_usage_summaries("here", PeriodType.MONTHLY, start=START,
                                               end=START + timedelta(days=1))  # fmt: skip
        assert summary.total_quantity == Decimal("9")
    for key in ("here", "there"):
        assert grouped(server, db, "model", key) == {"m 0": 3, "m 1": 3}
        assert grouped(server, db, "region", key) == {"eu": 6}
    assert points(server, db) == 12


@pytest.mark.parametrize("value", ["line\nbreak", "tab\there", "", 1.5, [1], {"a": 1}])
def test_values_recording_refuses_never_reach_a_line(value: object) -> None:
    """A value recording refuses (newline, control characters, empty, a float, a list, an
    object) gives no tag, and the point stays one line (no server needed)."""
    from tsmeter.adapters.influxdb.lineprotocol import UsageEncoder

    encoder = UsageEncoder("usage", writer="w")
    encoder.know("tokens", None, ("model",))
    row = RecordRow("r", "tokens", "org", "o", None, 1, 5, json.dumps({"model": value}), None)
    line = encoder.encode([row]).decode()
    assert line.count("\n") == 1 and line.endswith("\n")
    assert "dim.model" not in line


def test_v2_writes_dimension_tags_that_read_back_and_retries_land_once(
    influx2_bucket: tuple[Influx2Server, str], tmp_path: Path
) -> None:
    """InfluxDB 2.x: the same encoder writes the same tags; the raw points read back through
    Flux carry each hostile value exactly, 2,000 records at one instant stay 2,000 points,
    and a retry adds none."""
    server, bucket = influx2_bucket
    values = [*HOSTILE, None]
    batch = [
        RecordRow(f"r{i:04d}", "tokens", "org", "o1", None, 10**6, T,
                  json.dumps({} if values[i % len(values)] is None
                             else {"model": values[i % len(values)]}), None)
        for i in range(2_000)
    ]  # fmt: skip
    metric = MetricDefinition.model_validate({"key": "tokens", **tokens_metric()})
    store = InfluxStore.from_url(server.store_url(bucket, writer="w1"),
                                 ledger=str(tmp_path / "a.db"))  # fmt: skip
    try:
        store.know_metrics([metric])
        assert store.append(batch, 0) == 2_000
        assert store.append(batch, 0) == 0
        found = [values for _, values in store.transport.stored(batch) if values.get("rid")]
        assert len(found) == 2_000
        got = Counter(
            decode_tag(str(v["dim.model"])) if v.get("dim.model") else None for v in found
        )
        assert got == Counter(values[i % len(values)] for i in range(2_000))
    finally:
        store.close()
