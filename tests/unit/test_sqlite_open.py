"""Several processes creating the same new SQLite file at once all get a working store."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from tsmeter.adapters.influxdb.ledger import IdLedger
from tsmeter.adapters.sqlite import SQLiteStore


def _open(kind: str, path: str, start: Any, results: Any) -> None:
    """Child: wait for the others, open the file, report how it went."""
    start.wait(timeout=30)
    try:
        opened = SQLiteStore(path) if kind == "store" else IdLedger(path, "t")
        opened.close()
        results.put("ok")
    except Exception as exc:  # reported to the parent, which asserts on it
        results.put(repr(exc))


def test_simultaneous_first_opens_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL mode while other processes do the same is retried, not
    reported as 'database is locked' (20 rounds of four processes per kind of file)."""
    ctx = multiprocessing.get_context("fork")
    outcomes: list[str] = []
    for round_ in range(20):
        for kind in ("store", "ledger"):
            path = str(tmp_path / f"{kind}-{round_}.db")
            start, results = ctx.Barrier(4), ctx.Queue()
            workers = [
                ctx.Process(target=_open, args=(kind, path, start, results)) for _ in range(4)
            ]
            for w in workers:
                w.start()
            outcomes += [results.get(timeout=60) for _ in workers]
            for w in workers:
                w.join(timeout=10)
    assert set(outcomes) == {"ok"}
