"""The InfluxDB 2.x store and its Flux tasks against a real InfluxDB 2.x (see
tests/influx2_server.py: an URL from the environment, or a container)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.hostile import NASTY_NAMES, PIECES
from tests.influx2_server import Influx2Server
from tsmeter.adapters.influxdb import flux
from tsmeter.adapters.influxdb.client import PartialWriteError
from tsmeter.adapters.influxdb.schema import summary_measurement
from tsmeter.adapters.influxdb.store import InfluxStore
from tsmeter.adapters.influxdb.tasks import task_name
from tsmeter.cli.main import cli
from tsmeter.domain import PeriodType, RecordRow
from tsmeter.domain.periods import Calendar
from tsmeter.errors import StorageUnavailableError
from tsmeter.ports import RecordQuery, SummaryQuery

H = 3_600_000_000_000
T = 1_767_225_600_000_000_000


@pytest.fixture
def store(influx2_bucket: tuple[Influx2Server, str], tmp_path: Path) -> Iterator[InfluxStore]:
    """A 2.x store on a fresh bucket."""
    server, bucket = influx2_bucket
    opened = InfluxStore.from_url(
        server.store_url(bucket, writer="w1"), ledger=str(tmp_path / "s.db")
    )
    yield opened
    opened.close()


def test_init_creates_the_bucket(influxdb2: Influx2Server, tmp_path: Path) -> None:
    """`influx init` creates a missing bucket, and running it again is harmless."""
    bucket = f"cli_init_{time.time_ns()}"
    url = influxdb2.store_url(bucket, state=str(tmp_path / "state.db"))
    try:
        for _ in range(2):
            result = CliRunner().invoke(cli, ["--store", url, "influx", "init"])
            assert result.exit_code == 0, result.output
            assert f"{bucket!r} is ready" in result.output
        with influxdb2.client() as client:
            assert client.buckets_api().find_bucket_by_name(bucket) is not None
    finally:
        influxdb2.drop_bucket(bucket)


def test_hostile_values_round_trip(store: InfluxStore) -> None:
    """Names with separators, quotes, backslashes, ``${`` and non-BMP text are stored, read,
    summarised and purged exactly; purging the global metric keeps an org's metric of the
    same key."""
    names = [*NASTY_NAMES[:20], *PIECES[:20], "${x}", 'a "b" c', "x\\"]
    rows = [
        RecordRow(f"{n}#{i}", names[i % 7], names[i], names[-1 - i], None, i * 10**6, T + i * H,
                  '{"k":"' + "\\\\" + '"}', names[i])
        for i, n in enumerate(names)
    ]  # fmt: skip
    scoped = [r._replace(id=f"org{r.id}", org_id=names[3]) for r in rows[:5]]
    assert store.append(rows + scoped, 0) == len(rows) + len(scoped)
    assert store.append(rows, 0) == 0
    store._recent.clear()
    for row in rows + scoped:
        assert store.get_record(row.id) == row
    for metric in set(names[:7]):
        want = sorted((r for r in rows if r.metric_key == metric), key=lambda r: (r.ts, r.id))
        assert list(store.iter_records(RecordQuery(metric))) == want
        summary = store.summaries(
            SummaryQuery(metric, PeriodType.YEARLY, T, T + 400 * 24 * H), Calendar()
        )
        assert sum(s.record_count for s in summary) == len(want)
    metric = rows[0].metric_key
    before = list(store.iter_records(RecordQuery(metric, org_id=names[3])))
    assert store.purge_metric(metric, None) == sum(r.metric_key == metric for r in rows)
    assert list(store.iter_records(RecordQuery(metric))) == []
    assert list(store.iter_records(RecordQuery(metric, org_id=names[3]))) == before


def test_wrong_token_is_one_clear_error(influx2_bucket: tuple[Influx2Server, str]) -> None:
    """A token the server refuses is StorageUnavailableError saying so."""
    server, bucket = influx2_bucket
    bad = InfluxStore.from_url(server.store_url(bucket, token="not-a-token"))
    try:
        with pytest.raises(StorageUnavailableError, match="check the token"):
            bad.append([RecordRow("r", "m", "org", "o", None, 10**6, T, None, None)], 0)
    finally:
        bad.close()


def test_points_beyond_the_retention_raise_a_partial_write(influxdb2: Influx2Server) -> None:
    """A batch with points older than the bucket's retention reports the partial write."""
    from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules

    bucket = f"short_{time.time_ns()}"
    with influxdb2.client() as client:
        rules = BucketRetentionRules(type="expire", every_seconds=3600)
        client.buckets_api().create_bucket(bucket_name=bucket, retention_rules=rules)
    store = InfluxStore.from_url(influxdb2.store_url(bucket))
    now = time.time_ns() // 1_000_000_000 * 1_000_000_000
    try:
        with pytest.raises(PartialWriteError):
            store.append([RecordRow(f"r{i}", "m", "org", "o", None, 10**6, now - i * 48 * H,
                                    None, None) for i in range(3)], 0)  # fmt: skip
    finally:
        store.close()
        influxdb2.drop_bucket(bucket)


def _run_tasks(server: Influx2Server, names: list[str]) -> None:
    """Run each named task once, now, and wait until every run has finished well."""
    with server.client() as client:
        tasks = client.tasks_api()
        for name in names:
            (task,) = tasks.find_tasks(name=name)
            run = tasks.run_manually(task.id)
            deadline = time.monotonic() + 60
            while True:
                status = tasks.get_run(task.id, run.id).status
                if status in ("success", "failed", "canceled"):
                    break
                assert time.monotonic() < deadline, f"task {name!r} did not finish in 60 s"
                time.sleep(0.5)
            logs = [e.message for e in tasks.get_run_logs(task.id, run.id)]
            assert status == "success", (name, logs)


def _stored(store: InfluxStore, zone: str) -> dict[PeriodType, Any]:
    return {p: store.transport.stored_summaries("api_calls", p, zone) for p in PeriodType}


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kathmandu"])
def test_tasks_write_the_aggregators_summaries(
    influx2_bucket: tuple[Influx2Server, str], tmp_path: Path, zone: str
) -> None:
    """Tasks installed with `influx install-rollups` (one per period type: every metric reset
    period here) write the summaries `aggregate` writes for the same records, and running
    them again changes nothing."""
    server, bucket = influx2_bucket
    url = server.store_url(bucket, writer="w1", state=str(tmp_path / "state.db"))
    runner = CliRunner()
    for period in ("hourly", "daily", "weekly", "monthly", "yearly"):
        result = runner.invoke(cli, ["--store", url, "metric", "define", f"m_{period}",
                                     "--reset-period", period])  # fmt: skip
        assert result.exit_code == 0, result.output
    now = time.time_ns() // 1_000_000_000 * 1_000_000_000
    rows = [
        RecordRow(f"r{i}", "api_calls", "org", f"o{i % 3}", None, (i % 7) * 10**6,
                  now - i * 37_000_000_000, None, None)
        for i in range(150)
    ]  # fmt: skip
    rows.append(rows[0]._replace(id="r0-tie", quantity=99 * 10**6))  # same instant, larger id: LAST
    store = InfluxStore.from_url(url, ledger=str(tmp_path / "state.db"))
    try:
        assert store.append(rows, 0) == len(rows)
        result = runner.invoke(cli, ["--store", url, "--timezone", zone, "influx",
                                     "install-rollups", "--every", "1h"])  # fmt: skip
        assert result.exit_code == 0, result.output
        names = [task_name(bucket, p, zone) for p in PeriodType]
        _run_tasks(server, names)
        from_tasks = _stored(store, zone)
        assert all(from_tasks[p] for p in PeriodType)
        _run_tasks(server, names)
        assert _stored(store, zone) == from_tasks
        for period in PeriodType:
            measurement = summary_measurement(period, zone)
            store.transport.api.delete(flux.delete_predicate({"_measurement": measurement}))
            store.rollup(period, Calendar(zone), now - 400 * 24 * H, now + H)
        assert _stored(store, zone) == from_tasks
    finally:
        store.close()


def test_install_rollups_upserts_by_name(
    influx2_bucket: tuple[Influx2Server, str], tmp_path: Path
) -> None:
    """Installing twice leaves one task per name, with the second install's schedule."""
    server, bucket = influx2_bucket
    url = server.store_url(bucket, state=str(tmp_path / "state.db"))
    for every in ("1m", "30s"):
        args = ["--timezone", "Europe/Paris", "influx", "install-rollups", "--every", every]
        result = CliRunner().invoke(cli, ["--store", url, *args])
        assert result.exit_code == 0, result.output
    with server.client() as client:
        for period in (PeriodType.HOURLY, PeriodType.DAILY):
            found = client.tasks_api().find_tasks(name=task_name(bucket, period, "Europe/Paris"))
            assert len(found) == 1
            assert found[0].every == "30s" and found[0].status == "active"
