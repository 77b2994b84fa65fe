"""Continuous queries on the real influxd 1.x write the summaries tsmeter's aggregator writes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.influx_server import InfluxServer
from tsmeter.adapters.influxdb.client import quote_ident, series_rows
from tsmeter.adapters.influxdb.cq import continuous_queries
from tsmeter.adapters.influxdb.schema import summary_measurement
from tsmeter.adapters.influxdb.store import InfluxStore
from tsmeter.cli.main import cli
from tsmeter.domain import PeriodType, RecordRow
from tsmeter.domain.periods import Calendar
from tsmeter.errors import ValidationError

H = 3_600_000_000_000


def summaries(store: InfluxStore, period: PeriodType, zone: str) -> dict[Any, tuple[Any, ...]]:
    """The summary points of ``period`` as {(subject, start): (count, sum, min, max, last, ts)}."""
    (result,) = store.transport.client.query(
        f"SELECT * FROM {quote_ident(summary_measurement(period, zone))}"
    )
    return {
        (v["subject_id"], int(v["time"])): (
            int(v["count"]), float(v["sum"]), float(v["min"]), float(v["max"]),
            float(v["last"]), int(v["last_ts"]),
        )
        for _, v in series_rows(result)
    }  # fmt: skip


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kathmandu"])
def test_continuous_queries_equal_the_aggregator(
    influx_db: tuple[InfluxServer, str], tmp_path: Path, zone: str
) -> None:
    """Hourly and daily summaries from the installed continuous queries equal the ones
    ``aggregate`` writes for the same records (records in the last two hours, so the
    queries' resample window covers them)."""
    server, db = influx_db
    url = f"influxdb://127.0.0.1:{server.port}/{db}?writer=w1&state={tmp_path / 'state.db'}"
    now = time.time_ns() // 1_000_000_000 * 1_000_000_000
    rows = [
        RecordRow(f"r{i}", "api_calls", "org", f"o{i % 3}", None, float(i % 7),
                  now - i * 37_000_000_000, None, None)
        for i in range(150)
    ]  # fmt: skip
    store = InfluxStore.from_url(url, ledger=str(tmp_path / "state.db"))
    try:
        assert store.append(rows, 0) == 150
        result = CliRunner().invoke(
            cli, ["--store", url, "--timezone", zone, "influx", "install-rollups", "--every", "1s"]
        )
        assert result.exit_code == 0, result.output
        cal = Calendar(zone)
        periods = (PeriodType.HOURLY, PeriodType.DAILY)
        want = {p: {(r.subject_id, cal.start_of(p, r.ts)) for r in rows} for p in periods}
        deadline = time.monotonic() + 60
        previous: dict[PeriodType, dict[Any, tuple[Any, ...]]] = {}
        while True:  # until both queries have covered every period and stopped changing
            current = {p: summaries(store, p, zone) for p in periods}
            if current == previous and all(set(current[p]) == want[p] for p in periods):
                break
            assert time.monotonic() < deadline, "the continuous queries did not settle in 60 s"
            previous = current
            time.sleep(1.0)
        for name in continuous_queries(db, zone, lateness=dict.fromkeys(PeriodType, "1h")):
            drop = f"DROP CONTINUOUS QUERY {quote_ident(name)} ON {quote_ident(db)}"
            store.transport.client.query(drop)
        time.sleep(1.0)  # a pass that was already running finishes
        from_cq = {p: summaries(store, p, zone) for p in periods}
        for period in (PeriodType.HOURLY, PeriodType.DAILY):
            measurement = quote_ident(summary_measurement(period, zone))
            store.transport.client.query(f"DROP MEASUREMENT {measurement}")
            store.rollup(period, Calendar(zone), now - 3 * 24 * H, now + H)
            assert summaries(store, period, zone) == from_cq[period], period
    finally:
        store.close()


def test_durations_are_checked() -> None:
    """A run interval that is not an InfluxQL duration is refused before anything is sent."""
    with pytest.raises(ValidationError, match="every"):
        continuous_queries("db", "UTC", every="1m; DROP DATABASE db", lateness={})
