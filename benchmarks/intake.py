"""Intake: validating record dicts into rows, from Python objects and from JSON Lines.

    .venv/bin/python benchmarks/intake.py [--records 200000] [--repeat 5] [--call 1000]

Prints the best of ``--repeat`` runs of ``Intake.rows`` for ``--records`` records (two
metrics, 50 subjects, float quantities, no ids given), with the intake's compiled path (where
built; ``-`` otherwise), its msgspec path and its Python loop alone, whole and in calls of
``--call`` records:

* dicts whose ``timestamp`` is an aware datetime (what an application passes to
  ``record_batch``);
* JSON Lines bytes decoded line by line with the standard library's ``json.loads`` and with
  msgspec's decoder, then validated; once with the time as an ISO-8601 string (which the
  Python loop parses) and once without a time (the server's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from tsmeter.domain import AggregationType, MetricDefinition
from tsmeter.metering import intake

METRICS = {
    key: MetricDefinition(key=key, name=key, aggregation_type=AggregationType.SUM)
    for key in ("api_calls", "tokens")
}


def make_records(n: int) -> list[dict[str, Any]]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=30) / n
    return [
        {"metricKey": "api_calls" if i % 3 else "tokens", "subjectType": "org",
         "subjectId": f"org-{i % 50}", "quantity": float(i % 17 + 1), "timestamp": start + step * i}
        for i in range(n)
    ]  # fmt: skip


def best(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--call", type=int, default=1000, help="records per call, second table")
    args = parser.parse_args()
    records = make_records(args.records)
    timed = [json.dumps({**r, "timestamp": r["timestamp"].isoformat()}).encode() for r in records]
    untimed = [json.dumps({k: v for k, v in r.items() if k != "timestamp"}).encode()
               for r in records]  # fmt: skip
    decode = msgspec.json.Decoder().decode
    check = intake.Intake(lambda key, org: METRICS[key])
    cases: list[tuple[str, Callable[[], object]]] = [
        ("dicts, datetime", lambda: check.rows(records)),
        ("JSON Lines, ISO time, json", lambda: check.rows([json.loads(x) for x in timed])),
        ("JSON Lines, ISO time, msgspec", lambda: check.rows([decode(x) for x in timed])),
        ("JSON Lines, no time, json", lambda: check.rows([json.loads(x) for x in untimed])),
        ("JSON Lines, no time, msgspec", lambda: check.rows([decode(x) for x in untimed])),
    ]
    calls = [records[i : i + args.call] for i in range(0, len(records), args.call)]
    with_metadata = [{**r, "metadata": {"plan": "pro"}} for r in records]
    cases += [
        (f"dicts, datetime, calls of {args.call:,}", lambda: [check.rows(c) for c in calls]),
        ("dicts, datetime, metadata", lambda: check.rows(with_metadata)),
    ]
    paths = {"compiled": (True, True), "msgspec": (False, True), "Python loop": (False, False)}
    print(f"records: {args.records:,}, best of {args.repeat} (ms); {intake.describe()}")
    print(f"{'input':<36}" + "".join(f"{name:>14}" for name in paths))
    for label, run in cases:
        cells = []
        for compiled, fast in paths.values():
            if compiled and intake.compiled is None:
                cells.append(f"{'-':>14}")
                continue
            intake.compiled_path, intake.fast_path = compiled, fast
            try:
                cells.append(f"{best(run, args.repeat) * 1000:>14.0f}")
            finally:
                intake.compiled_path, intake.fast_path = True, True
        print(f"{label:<36}" + "".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
