"""Scale in subjects on the embedded store: aggregation and the threshold monitor.

    .venv/bin/python benchmarks/subjects_scale.py [--records 1000000] [--subjects 10000]

The same records (a month, one metric, the same times and quantities) are spread over
100 subjects and over ``--subjects`` subjects, each in its own temporary store. Prints:

* seconds of a MONTHLY aggregate at each subject count, and their ratio: the baseline is the
  100-subject run of the same records. A fresh store keeps no level below MONTHLY, so the
  months are computed from the records; then, with HOURLY and DAILY run once (kept), the
  seconds of a MONTHLY aggregate that rolls them up through those levels after 1 % more
  records arrived (late, spread over the month), at each subject count;
* seconds of ``evaluate_thresholds`` with one ``*`` threshold that every subject crosses
  (each gets an ``exceeded`` alert, its event and a webhook notification), then again with
  nothing changed (nothing new opens), beside a bare read of the window's summaries of every
  subject (the baseline: what one read of the usage costs).

Targets (issue "Billing-grade numbers", item 6): the MONTHLY ratio <= 3; evaluating the
threshold over 10,000 crossing subjects <= 2 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tsmeter

START = datetime(2026, 1, 1, tzinfo=UTC)
MONTH_NS = 31 * 86_400_000_000_000
BATCH = 100_000


def fill(meter: tsmeter.Meter, records: int, subjects: int) -> None:
    """``records`` records of one SUM metric over January, record ``i`` for subject
    ``i % subjects`` (the times and quantities do not depend on ``subjects``)."""
    step = timedelta(microseconds=MONTH_NS // 1000 // records)
    for lo in range(0, records, BATCH):
        meter.record_batch([
            {"id": f"r{i}", "metricKey": "api_calls", "subjectType": "org",
             "subjectId": f"org-{i % subjects:05d}", "quantity": i % 7 + 1,
             "timestamp": START + i * step}
            for i in range(lo, min(records, lo + BATCH))
        ])  # fmt: skip


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def aggregate_monthly(tmp: str, records: int, subjects: int) -> tuple[float, float, tsmeter.Meter]:
    """The seconds of a MONTHLY aggregate of the records spread over ``subjects`` in a fresh
    store, and of one through kept HOURLY and DAILY levels after 1 % more records (late,
    spread over the month); the meter (left open for the monitor's turn)."""
    meter = tsmeter.connect(f"sqlite:///{tmp}/s{subjects}.db")
    meter.define_metric("api_calls", aggregation_type="SUM", reset_period="MONTHLY")
    fill(meter, records, subjects)
    first = timed(lambda: meter.aggregate("MONTHLY"))
    meter.aggregate("HOURLY")
    meter.aggregate("DAILY")
    step = timedelta(microseconds=MONTH_NS // 1000 // (records // 100))
    meter.record_batch([
        {"id": f"late{i}", "metricKey": "api_calls", "subjectType": "org",
         "subjectId": f"org-{i * 7919 % subjects:05d}", "quantity": 1,
         "timestamp": START + i * step}
        for i in range(records // 100)
    ])  # fmt: skip
    return first, timed(lambda: meter.aggregate("MONTHLY")), meter


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=10_000)
    args = parser.parse_args()
    now = datetime(2026, 1, 31, 23, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        few_s, few_late, few = aggregate_monthly(tmp, args.records, 100)
        few.close()
        many_s, many_late, meter = aggregate_monthly(tmp, args.records, args.subjects)
        with meter:
            meter.create_threshold("api_calls", "org", 1, action="ALERT",
                                   notify_webhook="https://hooks.example.com/usage")  # fmt: skip
            window = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
            bare = timed(
                lambda: meter.get_usage_summaries(
                    "api_calls", "MONTHLY", start=window[0], end=window[1], subject_type="org"
                )
            )
            t0 = time.perf_counter()
            first = meter.evaluate_thresholds(now=now)
            evaluate = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = meter.evaluate_thresholds(now=now)
            evaluate_again = time.perf_counter() - t0
    ratio = many_s / few_s
    many = f"{args.subjects:,}"
    rows = [
        ("MONTHLY aggregate, 100 subjects", few_s, "(baseline)"),
        (f"MONTHLY aggregate, {many} subjects", many_s, f"ratio {ratio:.2f} (target <= 3)"),
        ("  through kept levels, 1 % late, 100", few_late, "(baseline)"),
        (f"  through kept levels, 1 % late, {many}", many_late,
         f"ratio {many_late / few_late:.2f}"),
        (f"window read, {many} subjects", bare, "(baseline: get_usage_summaries)"),
        ("evaluate_thresholds, all cross", evaluate,
         f"ratio {evaluate / bare:.1f} (target <= 2 s; {first.exceeded:,} opened)"),
        ("evaluate_thresholds, nothing new", evaluate_again,
         f"ratio {evaluate_again / bare:.1f} ({again.exceeded + again.approaching} opened)"),
    ]  # fmt: skip
    print(f"records: {args.records:,}")
    for label, seconds, note in rows:
        print(f"{label:<38}{seconds:>8.2f} s   {note}")
    ok = (
        ratio <= 3 and evaluate <= 2.0 and first.exceeded == args.subjects
        and again.exceeded + again.approaching == 0
    )  # fmt: skip
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
