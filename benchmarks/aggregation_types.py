"""What UNIQUE_COUNT, TIME_WEIGHTED_SUM and a breakdown by dimension cost beside the SUM
roll-up, on the embedded store, in the same run.

    .venv/bin/python benchmarks/aggregation_types.py [--records 1000000] [--subjects 1000]

Three metrics get ``--records`` records each over 30 days, with UUIDv4 ids (as a client sends
them) spread over ``--subjects`` organisations: ``tokens`` (SUM, dimensions ``model`` and
``region``), ``active_users`` (UNIQUE_COUNT of ``user_id``, 50,000 users) and ``storage``
(TIME_WEIGHTED_SUM in GB-hours, by ``region``), stored straight into the store in chunks of
100,000 (what recording costs is ``benchmarks/embedded_store.py``'s). Prints, for the same
30 days:

* the baseline: ``Meter.aggregate("DAILY")`` rolling the ``tokens`` records up into daily
  summaries (SQL inside the store), run before the other metrics are recorded, so it reads
  the same number of records as each measure below;
* daily ``get_usage_summaries`` of ``active_users`` (distinct users per org and day) and
  monthly (per org over the month, which no roll-up of days could give);
* daily ``get_usage_summaries`` of ``storage`` (readings carried across days, integrated);
* a daily ``get_usage_breakdown`` of ``tokens`` by ``model``;

each with its time, its ratio to the roll-up and the number of summaries it returned (a
breakdown's time grows with them as much as with the records). Measures are computed from
the records at read time in Python (``tsmeter.metering.measures``); the roll-up is SQL. The
whole run takes about five minutes on 2 cores, most of it storing 3M records with random ids.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import tsmeter
from tsmeter.domain import RecordRow

START = datetime(2026, 3, 1, tzinfo=UTC)
SPAN = timedelta(days=30)
START_NS = int(START.timestamp()) * 10**9
SPAN_NS = 30 * 86_400 * 10**9
MODELS = ("gpt-4o", "gpt-4o-mini", "o3", "mixtral-large", "mixtral-small", "gemini", "llama",
          "mistral")  # fmt: skip
REGIONS = ("eu", "us", "ap", "sa")


def rows(metric: str, n: int, subjects: int, seed: int) -> Iterator[list[RecordRow]]:
    """``n`` records of ``metric`` as the store takes them (quantities in units of 6 places,
    metadata as JSON text), evenly over the 30 days, in chunks of 100,000."""
    rnd = random.Random(seed)
    step = SPAN_NS // n
    for lo in range(0, n, 100_000):
        chunk = []
        for i in range(lo, min(n, lo + 100_000)):
            region = REGIONS[rnd.randrange(4)]
            if metric == "tokens":
                model = MODELS[rnd.randrange(len(MODELS))]
                meta = f'{{"model":"{model}","region":"{region}"}}'
                units = rnd.randrange(1, 20_000) * 10**6
            elif metric == "active_users":
                meta = f'{{"region":"{region}","user_id":"user-{rnd.randrange(50_000)}"}}'
                units = 10**6
            else:
                meta = f'{{"region":"{region}"}}'
                units = rnd.randrange(1, 5_000_000) * 1000
            rid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
            subject = f"org-{rnd.randrange(subjects)}"
            chunk.append(RecordRow(rid, metric, "org", subject, None, units, START_NS + step * i,
                                   meta, None))  # fmt: skip
        yield chunk


def fill(meter: tsmeter.Meter, metric: str, n: int, subjects: int, seed: int) -> float:
    """Store the records of ``metric`` (straight into the store: recording's own cost is
    measured by ``benchmarks/embedded_store.py``); return records/s."""
    t0 = time.perf_counter()
    for chunk in rows(metric, n, subjects, seed):
        meter.store.append(chunk, time.time_ns())
    return n / (time.perf_counter() - t0)


def timed(call: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = call()
    return time.perf_counter() - t0, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=1_000)
    args = parser.parse_args()
    n, subjects = args.records, args.subjects
    span = {"start": START, "end": START + SPAN}
    with tempfile.TemporaryDirectory() as tmp, tsmeter.connect(f"sqlite:///{tmp}/b.db") as meter:
        meter.define_metric("tokens", aggregation_type="SUM",
                            dimensions=[{"name": "model"}, {"name": "region"}])  # fmt: skip
        meter.define_metric("active_users", aggregation_type="UNIQUE_COUNT",
                            unique_property="user_id", dimensions=[{"name": "region"}])  # fmt: skip
        meter.define_metric("storage", aggregation_type="TIME_WEIGHTED_SUM", unit="GB",
                            dimensions=[{"name": "region"}], time_unit="HOUR")  # fmt: skip
        rates = {"tokens": fill(meter, "tokens", n, subjects, 1)}
        rollup, result = timed(lambda: meter.aggregate("DAILY"))
        rates["active_users"] = fill(meter, "active_users", n, subjects, 2)
        rates["storage"] = fill(meter, "storage", n, subjects, 3)
        runs = [
            ("UNIQUE_COUNT daily", lambda: meter.get_usage_summaries(
                "active_users", "DAILY", **span)),
            ("UNIQUE_COUNT monthly", lambda: meter.get_usage_summaries(
                "active_users", "MONTHLY", **span)),
            ("TIME_WEIGHTED_SUM daily", lambda: meter.get_usage_summaries(
                "storage", "DAILY", **span)),
            ("SUM by model, daily", lambda: meter.get_usage_breakdown(
                "tokens", "DAILY", group_by=["model"], **span)),
        ]  # fmt: skip
        measured = [(name, *timed(call)) for name, call in runs]
    print(f"{n:,} records per metric over 30 days, UUIDv4 ids, {subjects:,} subjects")
    print("recorded at " + ", ".join(f"{k} {v:,.0f}/s" for k, v in rates.items()))
    print(f"SUM roll-up, aggregate DAILY   {rollup:>8.2f} s   ratio 1.00"
          f"   ({result.summaries_written:,} summaries)")  # fmt: skip
    for name, seconds, found in measured:
        print(f"{name:<30} {seconds:>8.2f} s   ratio {seconds / rollup:.2f}"
              f"   ({len(found):,} summaries)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
