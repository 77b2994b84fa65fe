"""Each compiled fast path against the Python code it stands in for, measured in the same run.

    .venv/bin/python benchmarks/compiled_paths.py [--rows 100000] [--repeat 5]

A compiled function stays only where it is clearly needed (at least 1.5 times the Python
code's speed on this workload) and no library does the job. The workload is what an
InfluxDB write of ``--rows`` new records goes through: 50 subjects, two metrics, UUIDv7 ids
(as tsmeter makes them), one record every 13 ms; ``+ dimensions`` encodes them again with one
metric (a third of the rows) declaring a dimension, whose tags the Python code makes. For
each fast path the script prints the best of ``--repeat`` runs with the compiled code, with
the Python code (the module's ``native`` set to None) and the ratio; ``KEEP`` marks those at
1.5 or more. The fast paths live in the InfluxDB adapter
(``src/tsmeter/adapters/influxdb/_speedups.c``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tsmeter.domain import RecordRow, new_ids

START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
NEEDED = 1.5


def make_rows(n: int) -> list[RecordRow]:
    ids = new_ids(n)
    return [
        RecordRow(ids[i], "api_calls" if i % 3 else "tokens", "org", f"org-{i % 50}", None,
                  (i % 17 + 1) * 10**6, START_NS + i * 13_000_000,
                  None if i % 3 else f'{{"model":"m{i % 4}","region":"eu"}}', None)
        for i in range(n)
    ]  # fmt: skip


def best(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def cases(rows: list[RecordRow]) -> list[tuple[str, ModuleType, Callable[[], object]]]:
    """(the compiled function, the module whose ``native`` it is, a run of the workload)."""
    from tsmeter.adapters.influxdb import lineprotocol, placement, v1

    encoder = lineprotocol.UsageEncoder("usage", writer="bench")
    encoder.encode(rows[:1000])  # the series prefixes cached, as in a running store
    # a third of the rows are of a metric with a dimension: tags dim.model, made in Python
    dimensioned = lineprotocol.UsageEncoder("usage", writer="bench")
    dimensioned.know("tokens", None, ("model",))
    dimensioned.encode(rows[:1000])
    found: list[tuple[str, ModuleType, Callable[[], object]]] = [
        ("encode_usage", lineprotocol, lambda: encoder.encode(rows)),
        ("  + dimensions", lineprotocol, lambda: dimensioned.encode(rows)),
        ("place_fast", placement, lambda: placement.place(rows, placement.Slots(), {})),
    ]
    found.append(("series_spans", placement, lambda: placement.hours(rows)))
    # the existence read's days (span_bounds, and series_spans by day)
    found.append(("span_bounds", v1, lambda: v1._days(rows)))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = make_rows(args.rows)
    print(f"rows: {args.rows:,}, best of {args.repeat}")
    print(f"{'function':<16}{'compiled':>12}{'Python':>12}{'ratio':>8}")
    for name, module, run in cases(rows):
        native: Any = getattr(module, "native", None)
        if native is None:
            print(f"{name:<16}{'not built':>12}")
            continue
        compiled = best(run, args.repeat)
        module.native = None  # type: ignore[attr-defined]
        try:
            python = best(run, args.repeat)
        finally:
            module.native = native  # type: ignore[attr-defined]
        ratio = python / compiled
        verdict = "KEEP" if ratio >= NEEDED else "drop"
        shown = f"{compiled * 1000:>10.1f}ms{python * 1000:>10.1f}ms{ratio:>8.2f}"
        print(f"{name:<16}{shown}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
