"""The client against ``tsmeter serve`` on influxd 1.x, where the server writes through its
outbox: answers dropped after the server accepted the records are retried with the same ids,
and the totals read back are exact (needs influxd: skipped without it, failed in CI)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.client.live import LiveServer, TcpProxy
from tests.influx_server import InfluxServer
from tsmeter.client import Client, Retry

JAN = "2026-01-05T10:00:00Z"
AT = "2026-01-20T00:00:00Z"


@pytest.fixture
def influx_live(influx_db: tuple[InfluxServer, str], tmp_path: Path) -> Iterator[LiveServer]:
    influxd, db = influx_db
    url = f"influxdb://127.0.0.1:{influxd.port}/{db}?state={tmp_path / 'state.db'}"
    with LiveServer(tmp_path, store=url) as live:
        yield live


def test_retried_records_count_once_on_influxd(influx_live: LiveServer, key: str) -> None:
    proxy = TcpProxy(influx_live.port)
    try:
        with Client(proxy.url, retry=Retry(backoff=0.01)) as client:
            client.define_metric(key, aggregation_type="SUM", precision=2)
            proxy.drop_next(b"POST /v1/usage/records ")
            client.record(key, "org", "o-0", "0.01", timestamp=JAN)
            for _ in range(3):
                proxy.drop_next(b"POST /v1/usage/records/batch ")
            with client.batcher(max_records=1000, max_delay=0.05) as batcher:
                for i in range(3000):
                    batcher.add(key, "org", f"o-{i % 7}", "0.01", timestamp=JAN)
            assert batcher.sent == 3000 and proxy.dropped == 4
            total = sum(
                client.get_usage_summary(key, "org", f"o-{i}", "MONTHLY", at=AT).total_quantity
                for i in range(7)
            )
            assert total == Decimal("30.01")
            assert sum(1 for _ in client.get_usage(key, limit=100_000)) == 3001
    finally:
        proxy.close()
