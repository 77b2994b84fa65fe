"""``tsmeter usage export``: exact round trips through ``usage import``, one snapshot while
another process records, memory that does not grow with the records, progress on a terminal."""

from __future__ import annotations

import csv
import json
import os
import pty
import select
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

import tsmeter
from tests.hostile import NASTY_NAMES
from tsmeter.adapters.sqlite.store import SQLiteStore
from tsmeter.cli.main import cli
from tsmeter.domain import RecordRow
from tsmeter.ports import RecordQuery

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
TSMETER = [str(Path(sys.executable).parent / "tsmeter")]
HOSTILE = (*NASTY_NAMES, "=SUM(A1)", "+1", "-2", "@x", "'=x", "a\u2028b", "é\U0001f600")
#: metric -> precision: a count, cents, and the largest precision with tiny values
METRICS = {"calls": 0, "cents": 2, "tiny": 12}


def _stored(path: Path, metric: str) -> list[RecordRow]:
    store = SQLiteStore(str(path))
    try:
        return list(store.iter_records(RecordQuery(metric)))
    finally:
        store.close()


def _hostile_store(path: Path) -> None:
    """Records with hostile ids, subjects, sources and metadata, negative and tiny quantities,
    microseconds, several sharing a time."""
    meter = tsmeter.connect(str(path))
    for key, precision in METRICS.items():
        meter.define_metric(key, aggregation_type="SUM", precision=precision)
    records = []
    for n, name in enumerate(HOSTILE):
        for key in METRICS:
            records.append({
                "id": f"{name[:240]}#{key}", "metricKey": key, "subjectType": name[:40] or "t",
                "subjectId": name, "quantity": ["-0.000000000001", "1", "-12.34"][n % 3]
                if key == "tiny" else (n - 7 if key == "calls" else f"{n}.0{n % 10}"),
                "timestamp": datetime.fromtimestamp(1_767_225_600 + n // 3 + n % 3 / 1e6, UTC),
                "metadata": {name: [name, n, None, {"deep": name}]} if n % 2 else None,
                "source": name if n % 4 else None,
            })  # fmt: skip
    meter.record_batch(records)
    meter.close()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kathmandu"])
def test_export_of_hostile_records_imports_back_exactly(
    tmp_path: Path, fmt: str, zone: str
) -> None:
    """Every record exported (CSV neutralised) and imported into a new store is the same
    record: id, subject, exact quantity in units, instant, metadata and source."""
    source, target = tmp_path / "source.db", tmp_path / "target.db"
    _hostile_store(source)
    fresh = tsmeter.connect(str(target))
    for key, precision in METRICS.items():
        fresh.define_metric(key, aggregation_type="SUM", precision=precision)
    fresh.close()
    out = tmp_path / f"all.{fmt}"
    runner = CliRunner()
    exported = runner.invoke(
        cli, ["--store", str(source), "--timezone", zone, "usage", "export", "-o", str(out)]
    )
    assert exported.exit_code == 0, exported.output
    imported = runner.invoke(cli, ["--store", str(target), "usage", "import", str(out)])
    assert imported.exit_code == 0, imported.output
    for key in METRICS:
        original = _stored(source, key)
        assert len(original) == len(HOSTILE)
        assert _stored(target, key) == original
    text = out.read_text(encoding="utf-8")
    offset = "+00:00" if zone == "UTC" else "+05:45"
    assert f"2026-01-01T05:45:00{offset}" in text or f"2026-01-01T00:00:00{offset}" in text


def test_csv_cells_a_spreadsheet_would_run_are_neutralised(tmp_path: Path) -> None:
    """In CSV, text cells starting with = + - @ TAB or CR get a leading ' (quantities and
    timestamps never): the file holds no formula a spreadsheet would run."""
    source = tmp_path / "source.db"
    _hostile_store(source)
    meter = tsmeter.connect(str(source))
    out = tmp_path / "x.csv"
    with out.open("w", encoding="utf-8", newline="") as f:
        meter.export_usage(f, "calls", fmt="csv")
    meter.close()
    rows = list(csv.reader(out.open(encoding="utf-8", newline="")))
    for row in rows[1:]:
        for n, cell in enumerate(row):
            if n not in (4, 5):
                assert not cell or cell[0] not in "=+-@\t\r", row
    assert any(r[4].startswith("-") for r in rows[1:])  # negative quantities stay numbers


def _fill(path: Path, n: int, *, subjects: int = 1000) -> None:
    meter = tsmeter.connect(str(path))
    meter.define_metric("m", aggregation_type="SUM", precision=3)
    meter.close()
    store = SQLiteStore(str(path))
    for i in range(0, n, 50_000):
        store.append(
            [RecordRow(f"r{j:08d}", "m", "org", f"org-{j * 7919 % subjects}", None, j,
                       T0 + j * 997 % n * 1_000_000, '{"a":1}' if j % 3 else None, None)
             for j in range(i, min(n, i + 50_000))],
            0,
        )  # fmt: skip
    store.close()


_WRITER = """
import sys, time
from tsmeter.adapters.sqlite.store import SQLiteStore
from tsmeter.domain import RecordRow
store = SQLiteStore(sys.argv[1])
n, t0 = int(sys.argv[2]), int(sys.argv[3])
batch = 0
while True:
    # new records at times spread over the whole range, before and after any cursor
    store.append([RecordRow(f"w{batch}-{k}", "m", "org", f"org-{k}", None, 1,
                            t0 + (k * 7_777 + batch * 13) % n * 1_000_000, None, None)
                  for k in range(500)], 0)
    batch += 1
    open(sys.argv[4], "w").write(str(batch))
    time.sleep(0.002)
"""


def test_export_while_another_process_records_is_one_snapshot(tmp_path: Path) -> None:
    """Records written by another process during an export never make it skip or repeat a
    record that existed when it began; it sees none written after it began."""
    path, done = tmp_path / "s.db", tmp_path / "batches"
    _fill(path, 60_000)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), "60000", str(T0), str(done)]
    )
    try:
        while not done.exists():
            time.sleep(0.01)
        meter = tsmeter.connect(str(path))
        before = {r.id for r in _stored(path, "m")}
        out = tmp_path / "x.jsonl"
        with out.open("w", encoding="utf-8") as f:
            count = meter.export_usage(f, "m", progress=lambda n: time.sleep(0.01))
        after = {r.id for r in _stored(path, "m")}
        meter.close()
    finally:
        writer.kill()
        writer.wait()
    ids = [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert count == len(ids) == len(set(ids))  # nothing repeated
    assert before <= set(ids)  # nothing that existed at the start is missing
    assert len(after) > len(set(ids)) + 1000  # the writer kept writing during the export
    times = [json.loads(line)["timestamp"] for line in out.read_text().splitlines()]
    assert times == sorted(times)  # UTC: the text sorts as the instants do


_PEAK = """
import os, sys, tsmeter
def peak_kib():  # this process's own high-water mark (ru_maxrss counts the parent's)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
meter = tsmeter.connect(sys.argv[1])
with open(os.devnull, "w", encoding="utf-8", newline="") as out:
    n = meter.export_usage(out, "m", fmt=sys.argv[2])
print(n, peak_kib())
"""


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_memory_does_not_grow_with_the_records(tmp_path: Path, fmt: str) -> None:
    """The peak RSS of a process exporting 200,000 records is within 12 MB of one exporting
    50,000 (holding the records would take well over 50 MB more)."""
    peaks = {}
    for n in (50_000, 200_000):
        path = tmp_path / f"{n}.db"
        _fill(path, n)
        done = subprocess.run(
            [sys.executable, "-c", _PEAK, str(path), fmt], capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        count, peak_kib = map(int, done.stdout.split())
        assert count == n
        peaks[n] = peak_kib
    assert peaks[200_000] - peaks[50_000] < 12 * 1024, peaks


def _run_on_pty(args: list[str]) -> tuple[int, str]:
    """Run ``args`` with stdout and stderr on a pseudo-terminal (the only way to give a
    child a real terminal here); return its exit status and what it wrote there."""
    main, secondary = pty.openpty()
    child = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary)
    os.close(secondary)
    seen = b""
    while True:
        ready, _, _ = select.select([main], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    return child.wait(), seen.decode(errors="replace")


def test_export_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    """On a terminal, export draws a bar counting records against the store's count;
    without one, stderr holds nothing but the final line."""
    path = tmp_path / "s.db"
    _fill(path, 30_000)
    out = tmp_path / "x.jsonl"
    args = [*TSMETER, "--store", str(path), "usage", "export", "m", "-o", str(out)]
    status, seen = _run_on_pty(args)
    assert status == 0, seen
    assert "Exporting" in seen and "100%" in seen and "Exported 30000 records" in seen
    plain = subprocess.run(
        [*TSMETER, "--store", str(path), "usage", "export", "m", "-o", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert plain.stderr == ""
    assert plain.stdout == f"Exported 30000 records to {out}.\n"
    assert textwrap.dedent(out.read_text()).count("\n") == 30_000
