"""Quota checks: ``Meter.check`` latency and what ``record(enforce=True)`` costs.

    .venv/bin/python benchmarks/quotas.py [--calls 200000]

On the embedded store (a temporary file), with a monthly BLOCK threshold per
organisation, measures in one run:

* ``check()`` latency over many calls spread across 1,000 organisations (after a
  first call per organisation has read its usage): p50, p99, p99.9;
* ``record()`` per call without enforcement and with ``enforce=True``, on
  alternating rounds so both see the same machine, and their ratio.

Targets (issue "Threshold monitor, quotas ..."): check() p99 <= 5 us;
record() with enforcement <= 2x without.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tsmeter

ORGS = 1_000


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile of already sorted values."""
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--records", type=int, default=5_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        meter = tsmeter.connect(f"sqlite:///{tmp}/q.db")
        meter.define_metric("api_calls", aggregation_type="COUNT", reset_period="MONTHLY")
        meter.create_threshold("api_calls", "org", 1e12, action="BLOCK")
        orgs = [f"org-{i}" for i in range(ORGS)]
        for org in orgs:  # read each org's usage once
            meter.check("api_calls", "org", org)
        check = meter.check
        clock = time.perf_counter_ns
        samples: list[float] = []
        gc.disable()
        for i in range(args.calls):
            org = orgs[i % ORGS]
            t0 = clock()
            check("api_calls", "org", org)
            samples.append((clock() - t0) / 1000)
        gc.enable()
        samples.sort()
        plain: list[float] = []
        enforced: list[float] = []
        for _ in range(10):
            for enforce, out in ((False, plain), (True, enforced)):
                t0 = time.perf_counter()
                for i in range(args.records // 10):
                    meter.record("api_calls", "org", orgs[i % ORGS], enforce=enforce)
                out.append((time.perf_counter() - t0) / (args.records // 10) * 1e6)
        meter.close()
    p50, p99, p999 = (percentile(samples, q) for q in (0.5, 0.99, 0.999))
    base, with_quota = statistics.median(plain), statistics.median(enforced)
    print(f"check(): {args.calls:,} calls over {ORGS:,} organisations (embedded store)")
    print(f"  p50 {p50:6.2f} us   p99 {p99:6.2f} us   p99.9 {p999:6.2f} us   (target p99 <= 5)")
    print(f"record() without enforce      {base:8.1f} us/call   (the baseline)")
    print(f"record(enforce=True)          {with_quota:8.1f} us/call   ratio"
          f" {with_quota / base:.2f}  (target <= 2.00)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
