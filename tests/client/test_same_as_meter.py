"""The same program run on an in-process Meter and on the Client against ``tsmeter serve``
gives the same models (ids and times the store assigns aside): code moves between them
unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import tsmeter
from tests.client.live import LiveServer
from tsmeter.client import Client

JAN = "2026-01-05T10:00:00Z"
_ASSIGNED = {"id", "created_at", "updated_at"}


def program(api: Any, key: str) -> list[Any]:
    """Calls the Meter and the clients share, with the results to compare."""
    out: list[Any] = [api.define_metric(key, aggregation_type="AVG", unit="ms", precision=3)]
    out.append(
        api.record(
            key,
            "org",
            "o-1",
            "1.5",
            id=f"{key}-a",
            timestamp=JAN,
            metadata={"route": "/x", "n": [1, 2]},
        )
    )
    out.append(
        api.record_batch(
            [
                {
                    "metricKey": key,
                    "subjectType": "org",
                    "subjectId": "o-1",
                    "quantity": q,
                    "id": f"{key}-{n}",
                    "timestamp": f"2026-01-0{n}T12:00:00+05:45",
                }
                for n, q in enumerate(["0.001", 2, 3.25, "999999.999"], start=1)
            ]
        )
    )
    out.append(api.record(key, "org", "o-1", "1.5", id=f"{key}-a", timestamp=JAN))  # again
    out.append(api.get_usage_summary(key, "org", "o-1", "MONTHLY", at=JAN))
    out.append(
        api.get_usage_summaries(
            key, "DAILY", start="2026-01-01T00:00:00Z", end="2026-02-01T00:00:00Z"
        )
    )
    out.append(api.get_usage(key, "org", "o-1"))
    out.append(api.create_threshold(key, "org", "100.5", warn_threshold=50, action="WARN"))
    out.append(api.update_metric(key, unit="s"))
    return out


def _comparable(value: Any) -> Any:
    if isinstance(value, list):
        return [_comparable(item) for item in value]
    return value.model_dump(exclude=_ASSIGNED & set(type(value).model_fields))


def test_the_client_answers_as_the_meter_does(live: LiveServer, key: str, tmp_path: Path) -> None:
    with tsmeter.connect(f"sqlite:///{tmp_path / 'local.db'}", create=True) as meter:
        local = program(meter, key)
    with Client(live.url) as client:
        remote = program(client, key)
    assert [type(x) for x in remote] == [type(x) for x in local]
    assert _comparable(remote) == _comparable(local)
    # AVG of five records (the repeated id counts once): 1000006.750 / 5, exactly
    assert local[4].total_quantity == Decimal("200001.350")


def test_metadata_with_a_fraction(live: LiveServer, key: str, tmp_path: Path) -> None:
    """The Meter stores metadata {"latency": 2.5}; over HTTP it does too, for one record and
    in a batch (the server decodes numbers as Decimals for exact quantities; metadata's are
    stored as JSON gives them)."""
    with tsmeter.connect(f"sqlite:///{tmp_path / 'local.db'}", create=True) as meter:
        meter.define_metric(key, aggregation_type="COUNT")
        assert meter.record(key, "org", "o", metadata={"latency": 2.5}).metadata["latency"] == 2.5
    with Client(live.url) as client:
        client.define_metric(key, aggregation_type="COUNT")
        assert client.record(key, "org", "o", metadata={"latency": 2.5}).metadata["latency"] == 2.5
        deep = {"a": [{"b": 0.25}, 1e3], "c": "2.5"}
        client.record_batch([{"metricKey": key, "subjectType": "org", "subjectId": "p",
                              "id": "meta-batch", "metadata": deep}])  # fmt: skip
        (read,) = client.get_usage(key, subject_id="p")
        assert read.metadata == deep and type(read.metadata["a"][0]["b"]) is float


def test_metadata_reads_as_the_meter_returns_it(live: LiveServer, key: str) -> None:
    """Metadata stored by the Meter beside the server (its embedded store) reads back through
    the client as the Meter returns it: a fraction a float, not a Decimal."""
    with Client(live.url) as client:
        client.define_metric(key, aggregation_type="COUNT")
        with tsmeter.connect(live.store) as meter:
            stored = meter.record(key, "org", "o", metadata={"latency": 2.5, "n": [1, "x"]})
        (read,) = client.get_usage(key)
    assert read.metadata == stored.metadata
    assert type(read.metadata["latency"]) is float


def depth_program(api: Any, key: str) -> list[Any]:
    """Dimensions, a breakdown and corrections, the same calls on the Meter and a client."""
    now = datetime.now(UTC).replace(microsecond=0)
    out: list[Any] = [
        api.define_metric(
            key,
            precision=2,
            dimensions=[{"name": "model"}, {"name": "region", "values": ["eu", "us"]}],
        )
    ]
    for n, (model, region) in enumerate([("a", "eu"), ("b", "us"), ("a", None), (None, "eu")]):
        metadata = {k: v for k, v in (("model", model), ("region", region)) if v is not None}
        out.append(api.record(key, "org", f"o-{n % 2}", f"{n}.25", id=f"{key}-{n}",
                              timestamp=now - timedelta(hours=n), metadata=metadata))  # fmt: skip
    out.append(api.amend_record(f"{key}-1", "7.5", reason="misread", actor="ops"))
    out.append(api.cancel_record(f"{key}-2", reason="test", actor="ops", correction_id="c-2"))
    out.append(api.cancel_record(f"{key}-2", reason="test", actor="ops", correction_id="c-2"))
    span = {"start": now - timedelta(days=1), "end": now + timedelta(days=1)}
    out.append(api.get_usage_breakdown(key, "DAILY", **span, group_by=["model", "region"]))
    out.append(api.get_usage_breakdown(key, "DAILY", **span, where={"model": None}))
    out.append(api.get_usage_breakdown(key, "DAILY", **span, group_by="region",
                                       where={"model": "a"}, subject_id="o-0"))  # fmt: skip
    out.append(api.list_corrections(key))
    return out


def test_breakdowns_and_corrections_answer_as_the_meter_does(
    live: LiveServer, key: str, tmp_path: Path
) -> None:
    skip = {"corrected_at"}
    with tsmeter.connect(f"sqlite:///{tmp_path / 'depth.db'}", create=True) as meter:
        local = depth_program(meter, key)
    with Client(live.url) as client:
        remote = depth_program(client, key)

    def comparable(value: Any) -> Any:
        if isinstance(value, list):
            return [comparable(item) for item in value]
        fields = set(type(value).model_fields)
        return value.model_dump(exclude=(_ASSIGNED | skip) & fields)

    assert [type(x) for x in remote] == [type(x) for x in local]
    assert comparable(remote) == comparable(local)
    assert [c.applied for c in remote[5:8]] == [True, True, False]
    assert all(remote[8:11])
