"""usage export on a real influxd 1.x: the records re-import exactly into an embedded store,
and the server's count (for progress) is the number exported."""

from __future__ import annotations

import io
from pathlib import Path

from click.testing import CliRunner

import tsmeter
from tests.hostile import NASTY_NAMES
from tests.influx_server import InfluxServer
from tsmeter.adapters.influxdb.store import InfluxStore
from tsmeter.adapters.sqlite.store import SQLiteStore
from tsmeter.cli.main import cli
from tsmeter.ports import RecordQuery


def test_influx_export_imports_back_exactly_and_counts(
    influx_db: tuple[InfluxServer, str], tmp_path: Path
) -> None:
    """Records with hostile names and exact cents, exported from influxd as JSON Lines and
    imported into an embedded store, are the same rows; count_usage agrees with the export,
    also for a time range."""
    server, db = influx_db
    url = f"influxdb://127.0.0.1:{server.port}/{db}?writer=w1&state={tmp_path}/state.db"
    meter = tsmeter.connect(url, outbox=False, timezone="America/St_Johns")
    meter.define_metric("spend", aggregation_type="SUM", precision=2)
    meter.record_batch([
        {"id": f"{name[:200]}#{n}", "metricKey": "spend", "subjectType": "org",
         "subjectId": name, "quantity": f"{n - 9}.{n % 100:02d}",
         "timestamp": f"2026-01-0{1 + n % 5}T10:00:00.{n:06d}Z",
         "metadata": {"k": name} if n % 2 else None, "source": name if n % 3 else None}
        for n, name in enumerate(NASTY_NAMES)
    ])  # fmt: skip
    out = io.StringIO()
    assert meter.count_usage("spend") == meter.export_usage(out, "spend") == len(NASTY_NAMES)
    ranged = io.StringIO()
    start, end = "2026-01-02T00:00:00Z", "2026-01-04T00:00:00Z"
    exported = meter.export_usage(ranged, "spend", start=start, end=end)
    assert meter.count_usage("spend", start=start, end=end) == exported > 0
    meter.close()
    reader = InfluxStore.from_url(f"influxdb://127.0.0.1:{server.port}/{db}?writer=r",
                                  ledger=str(tmp_path / "ledger.db"))  # fmt: skip
    original = list(reader.iter_records(RecordQuery("spend")))
    reader.close()
    assert len(original) == len(NASTY_NAMES)
    target = tmp_path / "copy.db"
    copy = tsmeter.connect(str(target))
    copy.define_metric("spend", aggregation_type="SUM", precision=2)
    copy.close()
    (tmp_path / "x.jsonl").write_text(out.getvalue(), encoding="utf-8")
    done = CliRunner().invoke(cli, ["--store", str(target), "usage", "import",
                                    str(tmp_path / "x.jsonl")])  # fmt: skip
    assert done.exit_code == 0, done.output
    store = SQLiteStore(str(target))
    assert list(store.iter_records(RecordQuery("spend"))) == original
    store.close()
