"""Intake: validating record dicts into rows, from Python objects and from JSON Lines.

    .venv/bin/python benchmarks/intake.py [--records 200000] [--repeat 5]

Prints the best of ``--repeat`` runs of ``Intake.rows`` for ``--records`` records (two
metrics, 50 subjects, float quantities, no ids given), with the intake's msgspec path and
with its Python loop alone:

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
    print(f"records: {args.records:,}, best of {args.repeat} (ms)")
    print(f"{'input':<32}{'msgspec path':>14}{'Python loop':>14}")
    for label, run in cases:
        fast = best(run, args.repeat)
        intake.fast_path = False
        try:
            loop = best(run, args.repeat)
        finally:
            intake.fast_path = True
        print(f"{label:<32}{fast * 1000:>14.0f}{loop * 1000:>14.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
