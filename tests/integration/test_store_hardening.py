"""Hostile input at intake and poisoned data in the stores, on SQLite and a real influxd: bounded
quantities (64-bit units), one overflowing series failing alone, bounded metadata, honest
partial-write counts, fields that disagree and timestamps with nanoseconds."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import tsmeter
from tests.cli.conftest import Cli
from tests.influx_server import InfluxServer
from tsmeter import Meter
from tsmeter.adapters.influxdb.client import UnreadableAnswerError
from tsmeter.cli.main import cli
from tsmeter.domain import RecordRow, UsageRecord
from tsmeter.domain.modelio import build
from tsmeter.errors import SeriesError, StorageUnavailableError, ValidationError

T = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
DAY = "2026-01-01T05:00:00Z"
MAX_UNITS = 2**63 - 1
#: the largest quantity of a metric of the default precision (6): MAX_UNITS millionths
LIMIT = Decimal(MAX_UNITS) / 10**6


@pytest.fixture(params=["sqlite", "influxdb"])
def meter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Meter]:
    """A Meter on an empty embedded store, or on a fresh database of the session's influxd,
    with a SUM metric ``gb``."""
    if request.param == "influxdb":
        server, db = request.getfixturevalue("influx_db")
        url = f"influxdb://127.0.0.1:{server.port}/{db}?writer=w1&state={tmp_path}/state.db"
    else:
        url = f"sqlite:///{tmp_path}/usage.db"
    with tsmeter.connect(url) as opened:
        opened.define_metric("gb", aggregation_type="SUM")
        yield opened


def record(subject: str = "good", **fields: Any) -> dict[str, Any]:
    """A record of ``gb`` for ``subject`` at 00:00:01, with ``fields`` on top."""
    base = {"metricKey": "gb", "subjectType": "org", "subjectId": subject, "quantity": 5,
            "timestamp": "2026-01-01T00:00:01Z"}  # fmt: skip
    return {**base, **fields}


def stored_ids(meter: Meter) -> list[str]:
    """The ids of every record of ``gb``."""
    return sorted(r.id for r in meter.iter_usage("gb"))


def poison(meter: Meter) -> None:
    """Store two records of the largest quantity for subject ``bad`` (their sum is beyond the
    64-bit range of a total), and one of 5 for ``good``."""
    meter.record("gb", "org", "good", 5, timestamp="2026-01-01T00:00:01Z", id="g1")
    bad = [RecordRow(f"b{i}", "gb", "org", "bad", None, MAX_UNITS, T + 2000 + i, None, None)
           for i in range(2)]  # fmt: skip
    meter.store.append(bad, 0)


# -- 5: quantities are bounded; an overflowing series fails alone ----------------------------


@pytest.mark.parametrize(
    "quantity",
    [1e308, -1e16, 10**400, float("inf"), str(LIMIT + Decimal("0.000001")), -LIMIT - 1],
)
def test_quantities_beyond_the_bound_are_refused(meter: Meter, quantity: object) -> None:
    """A quantity beyond ±(2**63-1) units (±9223372036854.775807 at 6 places), or not finite,
    is a ValidationError naming the record, and nothing is stored."""
    with pytest.raises(ValidationError) as caught:
        meter.record_batch([record(id="ok"), record(id="big", quantity=quantity)])
    assert caught.value.field == "records[1].quantity"
    with pytest.raises(ValidationError) as single:
        meter.record("gb", "org", "good", quantity)
    assert single.value.field == "quantity"
    assert stored_ids(meter) == []


def test_the_bound_itself_is_accepted(meter: Meter) -> None:
    """±(2**63-1) units are still quantities, and their sum is exact."""
    meter.record_batch([record(id="a", quantity=str(LIMIT)), record(id="b", quantity=-LIMIT),
                        record(id="c", quantity=10**12)])  # fmt: skip
    summary = meter.get_usage_summary("gb", "org", "good", "DAILY", at=DAY)
    assert summary.total_quantity == LIMIT - LIMIT + 10**12 and summary.record_count == 3
    assert str(summary.total_quantity) == "1000000000000.000000"


def test_an_overflowing_series_fails_alone(meter: Meter) -> None:
    """Stored values whose sum overflows make that series' reads fail with an error naming it;
    the other subjects' summaries, listings and aggregation still work."""
    poison(meter)
    good = meter.get_usage_summary("gb", "org", "good", "DAILY", at=DAY)
    assert good.total_quantity == 5.0
    with pytest.raises(SeriesError) as caught:
        meter.get_usage_summary("gb", "org", "bad", "DAILY", at=DAY)
    assert caught.value.series == [("gb", "org", "bad", None)]
    assert "'bad'" in str(caught.value) and "'good'" not in str(caught.value)
    with pytest.raises(SeriesError) as listing:
        meter.get_usage_summaries("gb", "DAILY", start="2026-01-01T00:00:00Z",
                                  end="2026-01-02T00:00:00Z")  # fmt: skip
    assert [(r.subject_id, r.record_count) for r in listing.value.rows] == [("good", 1)]
    with pytest.raises(SeriesError) as aggregating:
        meter.aggregate("MONTHLY")
    assert aggregating.value.series == [("gb", "org", "bad", None)]
    assert meter.get_usage_summary("gb", "org", "good", "MONTHLY", at=DAY).total_quantity == 5.0
    assert meter.get_usage_summary("gb", "org", "good", "DAILY", at=DAY).total_quantity == 5.0
    assert stored_ids(meter) == ["b0", "b1", "g1"]  # the records are all still there


def test_thresholds_of_every_subject_still_evaluate_the_others(meter: Meter) -> None:
    """A ``*`` threshold on a metric with an overflowing series still opens the alerts of the
    other subjects; a threshold on the failing subject alone is reported as failed, naming it,
    and never stops the evaluation of the other thresholds."""
    poison(meter)
    every = meter.create_threshold("gb", "org", 3, period_type="DAILY")
    result = meter.evaluate_thresholds(now=DAY)
    assert (result.exceeded, result.failed) == (1, 1)
    assert [(a.subject_id, a.actual_value) for a in meter.list_alerts()] == [("good", 5.0)]
    assert result.errors[0].startswith(f"threshold {every.id}: ") and "'bad'" in result.errors[0]
    only_bad = meter.create_threshold("gb", "org", 3, "bad", period_type="DAILY")
    good = meter.create_threshold("gb", "org", 4, "good", period_type="DAILY")
    result = meter.evaluate_thresholds(now=DAY)
    assert (result.thresholds, result.exceeded, result.failed) == (3, 1, 2)
    assert any(e.startswith(f"threshold {only_bad.id}: ") for e in result.errors)
    assert [a.threshold_id for a in meter.list_alerts()].count(good.id) == 1


def test_alert_evaluate_reports_the_failed_series_and_exits_1(tmp_path: Path) -> None:
    """``alert evaluate`` prints what it did for the other series, then one ``Error:`` line per
    failed threshold naming the series, and exits 1 (no traceback)."""
    url = f"sqlite:///{tmp_path}/usage.db"
    with tsmeter.connect(url) as opened:
        opened.define_metric("gb", aggregation_type="SUM")
        poison(opened)
        opened.create_threshold("gb", "org", 3, period_type="DAILY")
    result = CliRunner().invoke(cli, ["--store", url, "alert", "evaluate", "--at", DAY])
    assert result.exit_code == 1, result.output
    assert "opened 1 exceeded" in result.stdout
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: threshold ") and "'bad'" in line
    assert "Traceback" not in result.output


def test_the_cli_never_prints_infinity(tmp_path: Path) -> None:
    """On the embedded store, a summary over an overflowing series is one ``Error:`` line
    naming it, never ``Infinity`` in JSON; the good subject's JSON summary still prints."""
    url = f"sqlite:///{tmp_path}/usage.db"
    with tsmeter.connect(url) as opened:
        opened.define_metric("gb", aggregation_type="SUM")
        poison(opened)
    run = Cli(CliRunner(), url, tmp_path)
    window = ["--period", "daily", "--from", "2026-01-01", "--to", "2026-01-02"]
    line = run.fails("usage", "summary", "gb", *window, fmt="json")
    assert "'bad'" in line and "Infinity" not in line
    shown = run.json("usage", "summary", "gb", *window, "--subject-type", "org",
                     "--subject-id", "good")  # fmt: skip
    assert [Decimal(str(s["totalQuantity"])) for s in shown] == [5]


def test_an_answer_that_is_not_json_is_a_storage_error(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """influxd answers a sum of +Inf with text that is not JSON: the client raises a tsmeter
    error (never a JSONDecodeError). (Float quantity fields are what stores written before
    integer units hold.)"""
    server, db = influx_db
    url = f"influxdb://127.0.0.1:{server.port}/{db}?writer=w1&state={tmp_path}/state.db"
    with tsmeter.connect(url) as opened:
        opened.define_metric("gb", aggregation_type="SUM")
        client = opened.store.transport.client  # type: ignore[attr-defined]
        client.write(
            b"usage,metric=gb,subject_type=org,subject_id=bad quantity=1e308 1767225600000002000\n"
            b"usage,metric=gb,subject_type=org,subject_id=bad quantity=1e308 1767225600000002001\n"
        )
        with pytest.raises(UnreadableAnswerError) as caught:
            client.query('SELECT sum("quantity") FROM "usage"')
    assert isinstance(caught.value, StorageUnavailableError)
    assert not isinstance(caught.value, json.JSONDecodeError)
    assert "+Inf" in str(caught.value)


# -- 6: metadata depth and size are bounded at intake ------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    """An object nested ``depth`` levels deep (``depth`` 1: ``{"k": 1}``)."""
    value: dict[str, Any] = {"k": 1}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


@pytest.mark.parametrize("depth", [33, 256, 5000])
def test_deep_metadata_is_refused_at_intake(meter: Meter, depth: int) -> None:
    """Metadata deeper than 32 levels is a ValidationError naming the field (the record's in a
    batch), never a RecursionError, and nothing is stored."""
    with pytest.raises(ValidationError) as single:
        meter.record("gb", "org", "good", 1, metadata=nested(depth))
    assert single.value.field == "metadata" and "32 levels" in single.value.problem
    with pytest.raises(ValidationError) as batch:
        meter.record_batch([record(id="ok"), record(id="deep", metadata=nested(depth))])
    assert batch.value.field == "records[1].metadata"
    assert stored_ids(meter) == []


def test_metadata_at_the_limits_is_stored_and_exported(meter: Meter) -> None:
    """Metadata 32 levels deep, and just under 64 KiB, is stored and exports as JSON Lines and
    CSV that read back to the same object."""
    deep, wide = nested(32), {"blob": "x" * 65_000}
    meter.record_batch([record(id="deep", metadata=deep), record(id="wide", metadata=wide)])
    out = io.StringIO()
    assert meter.export_usage(out, "gb") == 2
    docs = {d["id"]: d["metadata"] for d in map(json.loads, out.getvalue().splitlines())}
    assert docs == {"deep": deep, "wide": wide}
    csv_out = io.StringIO()
    assert meter.export_usage(csv_out, "gb", fmt="csv") == 2
    with pytest.raises(ValidationError, match="65536 bytes"):
        meter.record("gb", "org", "good", 1, metadata={"blob": "x" * 70_000})


# -- 10: fields that disagree, and sub-microsecond digits -----------------------------------


@pytest.mark.parametrize(
    ("camel", "snake", "value"),
    [("subjectId", "subject_id", "evil"), ("metricKey", "metric_key", "other"),
     ("subjectType", "subject_type", "user"), ("orgId", "org_id", "o2")],
)  # fmt: skip
def test_both_spellings_must_agree(meter: Meter, camel: str, snake: str, value: str) -> None:
    """A field given in both spellings with different values is an error naming both; the
    same value in both is one field."""
    given = record(id="r1", orgId="o1") if camel == "orgId" else record(id="r1")
    with pytest.raises(ValidationError) as caught:
        meter.record_batch([record(id="r0"), {**given, snake: value}])
    assert caught.value.field == f"records[1].{camel}" and snake in caught.value.problem
    assert stored_ids(meter) == []
    meter.record_batch([{**record(id="r2"), "subject_id": "good", "metric_key": "gb"}])
    assert stored_ids(meter) == ["r2"]


def test_the_record_model_refuses_disagreeing_spellings() -> None:
    """UsageRecord (pydantic) refuses both spellings with different values; equal ones pass."""
    data = {"metricKey": "gb", "subjectType": "org", "subjectId": "a",
            "timestamp": "2026-01-01T00:00:00Z"}  # fmt: skip
    with pytest.raises(ValidationError) as caught:
        build(UsageRecord, {**data, "subject_id": "b"})
    assert caught.value.field == "subjectId" and "subject_id" in caught.value.problem
    assert build(UsageRecord, {**data, "subject_id": "a"}).subject_id == "a"


def test_sub_microsecond_digits_are_refused_never_truncated(meter: Meter) -> None:
    """Nanosecond digits that are not zero are a ValidationError; trailing zeros are fine."""
    with pytest.raises(ValidationError) as caught:
        meter.record_batch([record(id="ns", timestamp="2026-03-01T00:00:00.123456789Z")])
    assert caught.value.field == "records[0].timestamp"
    assert "sub-microsecond" in caught.value.problem and "microseconds" in caught.value.problem
    meter.record_batch([record(id="zeros", timestamp="2026-03-01T00:00:00.123456000Z")])
    (stored,) = meter.iter_usage("gb")
    assert stored.timestamp.microsecond == 123456


# -- 7: a partial write says what the server holds -----------------------------------------


@pytest.fixture
def limited_server(influxd: InfluxServer) -> Iterator[InfluxServer]:
    """An influxd (the session's binary) whose ``max-values-per-tag`` is 3."""
    server = InfluxServer(influxd.binary, max_values_per_tag=3).start()
    try:
        yield server
    finally:
        server.stop()


def test_a_partial_write_counts_what_the_server_holds(
    limited_server: InfluxServer, tmp_path: Path
) -> None:
    """When influxd's tag limit drops part of a batch, the error counts the batch's records the
    server holds (read back, not guessed), and a retry after the limit is raised stores the
    rest exactly once."""
    limited_server.create_database("lim")
    url = (f"influxdb://127.0.0.1:{limited_server.port}/lim?writer=w1"
           f"&state={tmp_path}/state.db")  # fmt: skip
    with tsmeter.connect(url, outbox=False) as opened:  # the error of a direct write
        opened.define_metric("gb", aggregation_type="SUM")
        opened.record_batch([record(f"s{i}", id=f"first{i}") for i in range(3)])
        # eight records of subjects past the limit, then two of subjects the server knows
        batch = [record(f"new{i}", id=f"n{i}") for i in range(8)]
        batch += [record(f"s{i}", id=f"old{i}") for i in range(2)]
        with pytest.raises(StorageUnavailableError) as caught:
            opened.record_batch(batch)
        (result,) = limited_server.query('SELECT "rid" FROM "usage"', db="lim")["results"]
        held = {v[1] for s in result["series"] for v in s["values"]} & {r["id"] for r in batch}
        assert held == {"old0", "old1"}
        assert caught.value.records_stored == len(held)
        assert f"{len(held)} of 10 records are stored" in str(caught.value)
