"""Recording cost of declared properties: record_batch with and without two dimensions.

    .venv/bin/python benchmarks/record_properties.py [--records 100000] [--repeat 3]

Prints the best of ``--repeat`` runs of ``Meter.record_batch`` of ``--records`` records (50
subjects, float quantities, ids given, aware datetimes) into a fresh embedded store file each
run, for:

* a metric without dimensions, records without metadata (the baseline);
* the same metric, records carrying ``{"model": ..., "region": ...}`` metadata;
* a metric declaring ``model`` (open, 20 values in use, bound 100) and ``region`` (closed:
  four values) as dimensions, the same records: each value is checked, the open one's values
  admitted once (their first batch) and found in the process's cache afterwards.

Then the same three through ``Intake.rows`` alone (validation without the store), and the
ratios to the baseline of each, and the property check of the third case alone (the rows
built), all in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tsmeter
from tsmeter.metering import intake

MODELS = [f"model-{i}" for i in range(20)]
REGIONS = ["eu", "us", "ap", "sa"]


def make_records(n: int, metric: str, metadata: bool, run: int) -> list[dict[str, Any]]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=30) / n
    out = []
    for i in range(n):
        record: dict[str, Any] = {
            "id": f"{run}-{i}", "metricKey": metric, "subjectType": "org",
            "subjectId": f"org-{i % 50}", "quantity": (i % 1000) / 4,
            "timestamp": start + step * i,
        }  # fmt: skip
        if metadata:
            record["metadata"] = {"model": MODELS[i % 20], "region": REGIONS[i % 4]}
        out.append(record)
    return out


def best(repeat: int, run: Callable[[int], float]) -> float:
    return min(run(r) for r in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.records
    cases = [
        ("no dimensions, no metadata", "plain", False),
        ("no dimensions, metadata", "plain", True),
        ("two dimensions, metadata", "dims", True),
    ]
    print(f"intake path: {intake.describe()}; {n:,} records per call; best of {args.repeat}")
    with tempfile.TemporaryDirectory() as tmp:

        def meter_in(run: int, case: int) -> tsmeter.Meter:
            meter = tsmeter.connect(str(Path(tmp) / f"usage-{case}-{run}.db"))
            meter.define_metric("plain", aggregation_type="SUM")
            meter.define_metric("dims", aggregation_type="SUM", dimensions=[
                {"name": "model", "max_values": 100},
                {"name": "region", "values": REGIONS}])  # fmt: skip
            return meter

        batch_rates, intake_rates = [], []
        for case, (_, metric, metadata) in enumerate(cases):

            def batch(run: int, metric: str = metric, metadata: bool = metadata,
                      case: int = case) -> float:  # fmt: skip
                records = make_records(n, metric, metadata, run)
                with meter_in(run, case) as meter:
                    began = time.perf_counter()
                    meter.record_batch(records)
                    return time.perf_counter() - began

            def rows(run: int, metric: str = metric, metadata: bool = metadata,
                     case: int = case) -> float:  # fmt: skip
                records = make_records(n, metric, metadata, run)
                with meter_in(run, 10 + case) as meter:
                    check = meter._recorder._intake  # the Meter's own intake
                    check.rows(records[:10])  # the open dimension's values admitted once
                    began = time.perf_counter()
                    check.rows(records)
                    return time.perf_counter() - began

            batch_rates.append(n / best(args.repeat, batch))
            intake_rates.append(n / best(args.repeat, rows))
        print(
            f"{'case':<30} {'record_batch/s':>15} {'ratio':>6} {'Intake.rows/s':>15} {'ratio':>6}"
        )
        for (label, _, _), b, i in zip(cases, batch_rates, intake_rates, strict=True):
            print(f"{label:<30} {b:>15,.0f} {b / batch_rates[0]:>6.2f} {i:>15,.0f}"
                  f" {i / intake_rates[0]:>6.2f}")  # fmt: skip
        with meter_in(0, 99) as meter:
            records = make_records(n, "dims", True, 0)
            check = meter._recorder._intake
            built = check.rows(records)
            metric = [meter.get_metric("dims")]

            def alone(run: int) -> float:
                began = time.perf_counter()
                check.properties.rows(records, built, metric)
                return time.perf_counter() - began

            took = best(args.repeat, alone)
        print(
            f"the property check alone (two dimensions): {n / took:,.0f} records/s"
            f" ({took * 1000:.1f} ms per {n:,} records)"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
