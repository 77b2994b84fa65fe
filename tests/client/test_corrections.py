"""Corrections through the blocking and the asyncio client against a real ``tsmeter serve``:
the Meter's models and errors, a retry (a lost answer resent) a no-op, the trail listed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.client.live import LiveServer, TcpProxy
from tsmeter.client import AsyncClient, Client, Retry
from tsmeter.domain.corrections import Correction, CorrectionKind
from tsmeter.errors import ConflictError, NotFoundError, ValidationError

WHEN = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)


def _day_total(client: Client, key: str) -> Decimal:
    summary = client.get_usage_summary(key, "org", "o-1", "DAILY", at=WHEN)
    return summary.total_quantity


def test_cancel_amend_and_list(live: LiveServer) -> None:
    key = f"gb_{uuid.uuid4().hex[:8]}"
    rid = f'{key}/"r" 1'
    with Client(live.url) as client:
        client.define_metric(key, precision=2)
        client.record(key, "org", "o-1", "1.50", id=rid, timestamp=WHEN)
        client.record(key, "org", "o-1", "2.25", id=f"{key}-2", timestamp=WHEN)
        amended = client.amend_record(rid, Decimal("0.5"), reason="misread", actor="ops")
        assert isinstance(amended, Correction) and amended.kind is CorrectionKind.AMEND
        assert (amended.quantity_before, amended.quantity_after) == (Decimal("1.5"), Decimal("0.5"))
        assert amended.record_id == rid and amended.applied
        assert _day_total(client, key) == Decimal("0.5") + Decimal("2.25")

        async def cancel() -> Correction:
            async with AsyncClient(live.url) as aclient:
                return await aclient.cancel_record(f"{key}-2", reason="test", actor="ops")

        cancelled = asyncio.run(cancel())
        assert cancelled.kind is CorrectionKind.CANCEL and cancelled.quantity_after == 0
        assert _day_total(client, key) == Decimal("0.5")
        again = client.cancel_record(f"{key}-2", reason="test", actor="ops")
        assert not again.applied and again.id == cancelled.id
        with pytest.raises(ConflictError):
            client.amend_record(f"{key}-2", 1, reason="x", actor="ops")
        with pytest.raises(NotFoundError):
            client.cancel_record(f"{key}-none", reason="x", actor="ops")
        with pytest.raises(ValidationError) as raised:
            client.cancel_record(rid, reason="", actor="ops")
        assert raised.value.field == "reason"
        with pytest.raises(ValidationError) as raised:
            client.amend_record(rid, "0.001", reason="x", actor="ops")
        assert raised.value.field == "quantity"
        trail = client.list_corrections(key)
        assert [c.id for c in trail] == [amended.id, cancelled.id]
        assert client.list_corrections(record_id=rid) == [amended]

        async def listed() -> list[Correction]:
            async with AsyncClient(live.url) as aclient:
                return await aclient.list_corrections(key, start=WHEN, end=WHEN + timedelta(1))

        assert asyncio.run(listed()) == trail


def test_a_lost_answer_is_resent_and_applies_once(live: LiveServer) -> None:
    """The server applies the amend, the answer is dropped, the client sends it again: the
    same correction (derived id), applied once."""
    key = f"gb_{uuid.uuid4().hex[:8]}"
    with Client(live.url) as client:
        client.define_metric(key, precision=2)
        client.record(key, "org", "o-1", "4", id=f"{key}-1", timestamp=WHEN)
    proxy = TcpProxy(live.port)
    try:
        with Client(proxy.url, retry=Retry(backoff=0.01)) as client:
            proxy.drop_next(b"POST /v1/usage/records/")
            amended = client.amend_record(f"{key}-1", "3", reason="x", actor="ops")
            assert proxy.dropped == 1
            assert amended.quantity_after == 3 and not amended.applied
            assert len(client.list_corrections(key)) == 1
            assert _day_total(client, key) == 3
    finally:
        proxy.close()
