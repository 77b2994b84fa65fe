"""The default path on InfluxDB goes through a durable outbox of its own, against a real
influxd: record() from many threads lands exactly once, reads see what was just recorded, a
CLI command that records and exits delivers before it exits, and every opt-out works.

Totals are read back with InfluxQL, independently of tsmeter's own queries.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

import tsmeter
from tests.influx_server import InfluxServer
from tsmeter.cli.main import cli
from tsmeter.outbox.location import default_outbox_path

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def store_url(
    influx_db: tuple[InfluxServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """An influxdb:// URL on a fresh database, with $XDG_DATA_HOME (where the default outbox
    lives) in this test's directory and no outbox configured."""
    server, db = influx_db
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TSMETER_OUTBOX", raising=False)
    monkeypatch.delenv("TSMETER_DURABILITY", raising=False)
    yield f"influxdb://127.0.0.1:{server.port}/{db}?writer=w1&state={tmp_path / 'state.db'}"


def totals(server: InfluxServer, db: str) -> tuple[int, Decimal, int]:
    """``(points, sum of quantity, distinct record ids)`` of every raw point: the sum of the
    integer ``units`` field (6 places, the metric's default precision) as an exact Decimal."""
    found = server.series('SELECT count("units") AS n, sum("units") AS s FROM usage', db)
    ids = server.series('SELECT count(distinct("rid")) AS d FROM usage', db)
    if not found:
        return 0, Decimal(0), 0
    units = found[0]["s"]
    assert type(units) is int, units  # an integer field sums to an integer
    return int(found[0]["n"]), Decimal(units).scaleb(-6), int(ids[0]["d"])


def test_record_from_eight_threads_goes_through_the_default_outbox_exactly_once(
    influx_db: tuple[InfluxServer, str], store_url: str, tmp_path: Path
) -> None:
    """8 threads x 250 record() calls on the default path: the outbox is the store's own file
    under $XDG_DATA_HOME, calls share commits, and InfluxDB holds each record once."""
    server, db = influx_db
    rng = random.Random(20)
    # cents, given as Decimals: the sum in InfluxDB is exact
    plan = [[(f"t{t}-{i}", Decimal(rng.randint(1, 99_999)).scaleb(-2)) for i in range(250)]
            for t in range(8)]  # fmt: skip
    failures: list[BaseException] = []
    with tsmeter.connect(store_url) as meter:
        assert meter.outbox is not None
        assert meter.outbox.path == str(default_outbox_path(store_url))
        assert meter.outbox.path.startswith(str(tmp_path / "xdg" / "tsmeter" / "outbox"))
        meter.define_metric("gb", aggregation_type="SUM")

        def record(t: int) -> None:
            try:
                for rid, quantity in plan[t]:
                    meter.record("gb", "org", f"org-{t}", quantity, timestamp=AT, id=rid)
            except BaseException as exc:  # reported below, not lost in the thread
                failures.append(exc)

        threads = [threading.Thread(target=record, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert failures == []
        assert meter.flush(60)
        assert meter.outbox.commits < 2000  # callers shared transactions
    everything = [q for part in plan for _, q in part]
    assert totals(server, db) == (2000, sum(everything), 2000)


def test_a_read_right_after_a_record_sees_it(store_url: str) -> None:
    """Reads let the outbox deliver first, so the default path reads its own writes."""
    with tsmeter.connect(store_url) as meter:
        assert meter.outbox is not None
        meter.define_metric("calls", aggregation_type="COUNT")
        for i in range(5):
            meter.record("calls", "org", "o1", timestamp=AT, id=f"r{i}")
        got = meter.get_usage("calls", "org", "o1", limit=None)
        assert sorted(r.id for r in got) == [f"r{i}" for i in range(5)]


def test_opting_out_writes_to_the_store_directly(
    store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """outbox=False and $TSMETER_OUTBOX=off keep the outbox off; the embedded store has none
    by default and no default to ask for."""
    with tsmeter.connect(store_url, outbox=False) as meter:
        assert meter.outbox is None
    monkeypatch.setenv("TSMETER_OUTBOX", "off")
    with tsmeter.connect(store_url) as meter:
        assert meter.outbox is None
    monkeypatch.setenv("TSMETER_OUTBOX", str(tmp_path / "chosen.db"))
    with tsmeter.connect(store_url) as meter:
        assert meter.outbox is not None and meter.outbox.path == str(tmp_path / "chosen.db")
    monkeypatch.delenv("TSMETER_OUTBOX")
    with tsmeter.connect(f"sqlite:///{tmp_path / 'usage.db'}") as meter:
        assert meter.outbox is None
    with pytest.raises(tsmeter.ValidationError, match="outbox"):
        tsmeter.connect(f"sqlite:///{tmp_path / 'usage.db'}", outbox=True)
    assert not default_outbox_path(store_url).exists()  # no opt-out created it


def test_a_cli_command_that_records_delivers_before_it_exits(
    influx_db: tuple[InfluxServer, str], store_url: str
) -> None:
    """`tsmeter usage record` on InfluxDB returns once the record is in the server (the
    outbox delivers on close); `tsmeter outbox status` finds the store's default file;
    `--outbox off` writes directly."""
    server, db = influx_db
    runner = CliRunner()
    base = ["--store", store_url]
    done = runner.invoke(cli, [*base, "metric", "define", "gb", "--aggregation-type", "sum"])
    assert done.exit_code == 0, done.output
    for rid, quantity, extra in (("c1", "2", []), ("c2", "4", ["--outbox", "off"])):
        line = [*extra, "usage", "record", "--id", rid, "--timestamp", AT.isoformat()]
        done = runner.invoke(cli, [*base, *line, "gb", "org", "o1", quantity])
        assert done.exit_code == 0, done.output
    assert totals(server, db) == (2, Decimal(6), 2)
    status = runner.invoke(cli, [*base, "--format", "json", "outbox", "status"])
    assert status.exit_code == 0, status.output
    assert str(default_outbox_path(store_url)) in status.output
    assert '"pending": 0' in status.output
