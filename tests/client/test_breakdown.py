"""``get_usage_breakdown`` over HTTP: the blocking and the asyncio client answer exactly what
the Meter answers on the same store, for groupings and filters (hostile values included),
and name a bad argument as the Meter does."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import pytest

import tsmeter
from tests.client.live import LiveServer
from tsmeter.client import AsyncClient, Client
from tsmeter.errors import ValidationError

NOV = {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}
MODELS = ["gpt-4o", 'a,b "c"=d', "x\\y ünï", None]


def test_clients_answer_what_the_meter_answers(live: LiveServer) -> None:
    key = f"tokens_{uuid.uuid4().hex[:8]}"
    records = []
    for i in range(24):
        model = MODELS[i % len(MODELS)]
        metadata: dict[str, Any] = {"region": ["eu", "us"][i % 2]}
        if model is not None:
            metadata["model"] = model
        records.append({"id": f"{key}-{i}", "metric_key": key, "subject_type": "org",
                        "subject_id": f"o-{i % 3}", "quantity": Decimal(i) / 4,
                        "timestamp": f"2026-11-{1 + i:02d}T10:00:00Z",
                        "metadata": metadata})  # fmt: skip
    with Client(live.url) as client:
        client.define_metric(key, precision=2, dimensions=[{"name": "model"}, {"name": "region"}])
        client.record_batch(records)
        asks: list[dict[str, Any]] = [
            {},
            {"group_by": ["model"]},
            {"group_by": ("region", "model"), "period_type": "DAILY"},
            {"group_by": "model", "where": {"region": "eu"}},
            {"where": {"model": None}},
            {"where": {"model": 'a,b "c"=d'}, "subject_id": "o-1", "subject_type": "org"},
        ]
        over_http = [client.get_usage_breakdown(key, **NOV, **ask) for ask in asks]

        async def run() -> list[Any]:
            async with AsyncClient(live.url) as aclient:
                return [await aclient.get_usage_breakdown(key, **NOV, **ask) for ask in asks]

        assert asyncio.run(run()) == over_http
        with pytest.raises(ValidationError) as raised:
            client.get_usage_breakdown(key, **NOV, where={"model": 1.5})
        assert raised.value.field == "where.model"
        with pytest.raises(ValidationError) as raised:
            client.get_usage_breakdown(key, **NOV, group_by=["colour"])
        assert raised.value.field.startswith("groupBy")
    with tsmeter.connect(live.store, outbox=False, mirror=False) as meter:
        in_process = [meter.get_usage_breakdown(key, **NOV, **ask) for ask in asks]
    assert over_http == in_process
    assert all(over_http) and len(over_http[1]) > len(over_http[0])
    # independently: the eu total of each model, summed over subjects
    eu = {}
    for r in records:
        if r["metadata"]["region"] == "eu":
            name = r["metadata"].get("model")
            eu[name] = eu.get(name, Decimal(0)) + r["quantity"]
    got: dict[Any, Decimal] = {}
    for s in over_http[3]:
        assert s.dimensions is not None
        got[s.dimensions["model"]] = got.get(s.dimensions["model"], Decimal(0)) + s.total_quantity
    assert got == eu
