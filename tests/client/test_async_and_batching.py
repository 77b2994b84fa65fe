"""The asyncio client inside a running event loop, and both batchers, against a real
``tsmeter serve``: totals exact, a dropped answer counted once, a refused record set aside
while the rest of its batch is stored, quotas refused as QuotaExceededError."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.client.live import ROOT, LiveServer, TcpProxy
from tsmeter.client import AsyncBatcher, AsyncClient, Client, Rejected, Retry
from tsmeter.domain import UsageSummary
from tsmeter.errors import NotFoundError, QuotaExceededError, ValidationError

JAN = "2026-01-05T10:00:00Z"
AT = "2026-01-20T00:00:00Z"


def test_async_client_round_trips_inside_a_running_loop(live: LiveServer, key: str) -> None:
    async def main() -> UsageSummary:
        assert asyncio.get_running_loop().is_running()
        async with AsyncClient(live.url) as client:
            await client.define_metric(key, aggregation_type="SUM", precision=3)
            assert (await client.get_metric(key)).precision == 3
            records = [client.record(key, "org", "o", "0.001", timestamp=JAN) for _ in range(50)]
            await asyncio.gather(*records)
            with pytest.raises(ValidationError) as caught:
                await client.record(key, "org", "o", "0.0001", timestamp=JAN)
            assert caught.value.field == "quantity"
            with pytest.raises(NotFoundError):
                await client.get_metric(key + "-missing")
            made = await client.create_threshold(key, "org", "10", exist_ok=True)
            assert [t.id for t in await client.list_thresholds(key)] == [made.id]
            return await client.get_usage_summary(key, "org", "o", "MONTHLY", at=AT)

    summary = asyncio.run(main())
    assert summary.total_quantity == Decimal("0.050") and summary.record_count == 50


def test_sync_batcher_sends_everything_once_through_dropped_answers(
    live: LiveServer, key: str
) -> None:
    proxy = TcpProxy(live.port)
    try:
        with Client(proxy.url, retry=Retry(backoff=0.01)) as client:
            client.define_metric(key, aggregation_type="SUM", precision=2)
            proxy.drop_next(b"POST /v1/usage/records/batch ")
            proxy.drop_next(b"POST /v1/usage/records/batch ")
            with client.batcher(max_records=1000, max_delay=0.05) as batcher:
                ids = [
                    batcher.add(key, "org", f"o-{i % 3}", "0.01", timestamp=JAN)
                    for i in range(2500)
                ]
            assert batcher.pending == [] and batcher.rejected == [] and batcher.sent == 2500
            assert proxy.dropped == 2
            total = sum(
                client.get_usage_summary(key, "org", f"o-{i}", "MONTHLY", at=AT).total_quantity
                for i in range(3)
            )
            assert total == Decimal("25.00")
            stored = client.get_usage(key, limit=10_000)
            assert sorted(r.id for r in stored) == sorted(ids)
    finally:
        proxy.close()


def test_a_refused_record_is_set_aside_and_the_rest_stored(live: LiveServer, key: str) -> None:
    refused: list[Rejected] = []
    with Client(live.url) as client:
        client.define_metric(key, aggregation_type="SUM", precision=2)
        with client.batcher(max_records=100, max_delay=10, on_error=refused.append) as batcher:
            for i in range(10):
                batcher.add(key, "org", "o", "1.001" if i == 4 else "1", timestamp=JAN)
        assert len(refused) == 1 and batcher.rejected == refused
        assert refused[0].records[0]["quantity"] == "1.001"
        assert isinstance(refused[0].error, ValidationError)
        assert refused[0].error.field == "records[4].quantity"
        summary = client.get_usage_summary(key, "org", "o", "MONTHLY", at=AT)
        assert summary.total_quantity == Decimal("9.00")


def test_async_batcher_flushes_by_size_by_time_and_on_close(live: LiveServer, key: str) -> None:
    async def sent(batcher: AsyncBatcher, count: int) -> float:
        start = time.monotonic()
        while batcher.sent < count:
            assert time.monotonic() - start < 5, f"{batcher.sent} of {count} sent"
            await asyncio.sleep(0.005)
        return time.monotonic() - start

    async def main() -> int:
        async with AsyncClient(live.url) as client:
            await client.define_metric(key, aggregation_type="COUNT")
            async with client.batcher(max_records=100, max_delay=60) as batcher:
                for i in range(250):
                    batcher.add(key, "org", "o", timestamp=JAN, id=f"{key}-{i}")
                await sent(batcher, 200)  # two full batches go at once
                await asyncio.sleep(0.2)
                assert batcher.sent == 200 and len(batcher.pending) == 50
            assert batcher.sent == 250  # the rest when the block closed it
            async with client.batcher(max_records=100, max_delay=0.1) as batcher:
                batcher.add(key, "org", "o", timestamp=JAN)
                assert 0.05 < await sent(batcher, 1) < 2  # after max_delay
            summary = await client.get_usage_summary(key, "org", "o", "MONTHLY", at=AT)
            return int(summary.total_quantity)

    assert asyncio.run(main()) == 251


def test_quota_block_is_quota_exceeded(live: LiveServer, key: str) -> None:
    with Client(live.url) as client:
        client.define_metric(key, aggregation_type="COUNT")
        client.create_threshold(key, "org", 2, "o", action="BLOCK", period_type="MONTHLY")
        client.record(key, "org", "o", enforce=True)
        client.record(key, "org", "o", enforce=True)
        with pytest.raises(QuotaExceededError):
            client.record(key, "org", "o", enforce=True)
        with pytest.raises(QuotaExceededError):
            client.record_batch(
                [{"metricKey": key, "subjectType": "org", "subjectId": "o"}], enforce=True
            )


def test_a_sync_batcher_left_open_is_closed_at_exit(
    live: LiveServer, key: str, tmp_path: Path
) -> None:
    """A program that ends without closing its batcher still sends what it added."""
    with Client(live.url) as client:
        client.define_metric(key, aggregation_type="COUNT")
    script = tmp_path / "forgets.py"
    script.write_text(
        "import sys\n"
        "from tsmeter.client import Client\n"
        "batcher = Client(sys.argv[1]).batcher(max_delay=60)\n"
        "for _ in range(7):\n"
        "    batcher.add(sys.argv[2], 'org', 'o', timestamp='2026-01-05T10:00:00Z')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, str(script), live.url, key], env=env, check=True, timeout=60)
    with Client(live.url) as client:
        assert client.get_usage_summary(key, "org", "o", at=AT).record_count == 7
