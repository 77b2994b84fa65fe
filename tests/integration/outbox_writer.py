"""The process the kill -9 test kills: it records batches through a durable outbox and
prints each batch's number once ``record_batch`` returned (the batch is then committed to
the outbox file), then waits to be killed.

    python -m tests.integration.outbox_writer STORE_URL OUTBOX_PATH BATCHES
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import tsmeter

BATCH = 1_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def batch(number: int) -> list[dict[str, Any]]:
    """Batch ``number``: ids ``k{number:03d}-{i:04d}``, quantities 0.1, 0.2 and 0.3 (floats,
    which the store must sum exactly as decimals), one record per millisecond from T0, over
    ten subjects."""
    return [
        {
            "id": f"k{number:03d}-{i:04d}",
            "metricKey": "api_calls",
            "subjectType": "org",
            "subjectId": f"org-{i % 10}",
            "quantity": (1 + i % 3) / 10,
            "timestamp": T0 + timedelta(milliseconds=number * BATCH + i),
        }
        for i in range(BATCH)
    ]


def main(argv: list[str]) -> int:
    """Record ``BATCHES`` batches, acknowledging each on stdout, then sleep."""
    url, outbox, batches = argv[1], argv[2], int(argv[3])
    meter = tsmeter.connect(url, outbox=outbox, durability="outbox")
    for number in range(batches):
        meter.record_batch(batch(number))
        print(number, flush=True)  # acknowledged: committed to the outbox file
    time.sleep(600)  # until killed (bounded, in case the test went away)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
