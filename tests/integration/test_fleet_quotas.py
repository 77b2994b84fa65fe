"""Quotas in a fleet: each host answers ``check()`` from memory, so two hosts can pass a
limit together by at most what the other recorded since its view was read; a host whose view
is read after the other's records are stored passes nothing."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from tests.influx_server import InfluxServer

LIMIT = 300


def enforce_until_refused(url: str, home: str, name: str, start: Any, results: Any) -> None:
    """Record one api_call at a time with ``enforce=True`` until refused; put the count."""
    os.environ["XDG_DATA_HOME"] = home
    import tsmeter

    try:
        with tsmeter.connect(url.replace("writer=W", f"writer={name}"), mirror=False) as meter:
            start.wait(timeout=60)
            made = 0
            while made <= LIMIT:
                try:
                    meter.record("api_calls", "org", "acme", enforce=True)
                except tsmeter.QuotaExceededError:
                    break
                made += 1
            assert meter.flush(60)
        results.put(made)
    except BaseException as exc:
        start.abort()
        results.put(f"{type(exc).__name__}: {exc}")


def _fleet(url: str, tmp_path: Path, names: list[str]) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(len(names)), ctx.Queue()
    procs = [ctx.Process(target=enforce_until_refused,
                         args=(url, str(tmp_path / name), name, start, results))
             for name in names]  # fmt: skip
    for proc in procs:
        proc.start()
    got = [results.get(timeout=180) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    return got


def test_the_overage_is_bounded_by_what_the_other_hosts_recorded_unseen(
    influx_db: tuple[InfluxServer, str], pg_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import tsmeter

    server, db = influx_db
    url = f"influxdb://127.0.0.1:{server.port}/{db}?writer=W&state={pg_url}"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "admin"))
    with tsmeter.connect(url.replace("writer=W", "writer=admin"), mirror=False) as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        meter.create_threshold("api_calls", "org", LIMIT, "acme", action="BLOCK",
                               period_type="DAILY")  # fmt: skip
    # one host alone: exactly the limit
    (alone,) = _fleet(url, tmp_path, ["h1"])
    assert alone == LIMIT
    # a second host started after h1's records are stored reads them: it passes nothing
    (late,) = _fleet(url, tmp_path, ["h2"])
    assert late == 0
    # room for LIMIT more, and two hosts at once:
    with tsmeter.connect(url.replace("writer=W", "writer=admin"), mirror=False) as meter:
        (threshold,) = meter.list_thresholds()
        meter.update_threshold(threshold.id, threshold=2 * LIMIT)
    both = _fleet(url, tmp_path, ["h3", "h4"])
    assert all(isinstance(n, int) for n in both), both
    # each host saw LIMIT used when it started; neither sees the other's records within
    # the refresh interval, so together they pass the limit by at most what the other made
    assert LIMIT <= sum(both) <= 2 * LIMIT
    assert max(both) <= LIMIT
    stored = server.series('SELECT count("units") FROM "usage"', db)[0]["count"]
    assert stored == LIMIT + sum(both)


def test_a_refresh_keeps_what_waits_in_the_outbox(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """While the outbox cannot deliver (influxd answers every write with 500 through a proxy;
    reads still work), a refresh of the quota view reads the store without the queued
    records: they must still count, or a BLOCK limit would open again during an outage."""
    import time

    import tsmeter
    from tests.fault_proxy import FaultProxy

    server, db = influx_db
    proxy = FaultProxy(server.url).start()
    try:
        url = f"influxdb://127.0.0.1:{proxy.port}/{db}?writer=q&retries=0&state={tmp_path}/s.db"
        with tsmeter.connect(url, outbox=str(tmp_path / "o.db"), quota_refresh=0.2,
                             mirror=False) as meter:  # fmt: skip
            meter.define_metric("api_calls", aggregation_type="COUNT", reset_period="DAILY")
            meter.create_threshold("api_calls", "org", 10, "o1", action="BLOCK")
            meter.record("api_calls", "org", "o1", enforce=True)
            assert meter.flush(10)
            proxy.plan.extend(["500"] * 10_000)  # every write fails from here
            for _ in range(9):
                meter.record("api_calls", "org", "o1", enforce=True)
            time.sleep(0.5)  # past the refresh: the view reads the store (1 record) again
            assert meter.check("api_calls", "org", "o1").used == 10
            with pytest.raises(tsmeter.QuotaExceededError):
                meter.record("api_calls", "org", "o1", enforce=True)
            proxy.plan.clear()
            assert meter.flush(60)
            time.sleep(0.5)  # delivered and read again: counted once, not twice
            assert meter.check("api_calls", "org", "o1").used == 10
        points = server.series('SELECT count("units") FROM "usage"', db)
        assert points[0]["count"] == 10
    finally:
        proxy.close()
