"""Dimensions and corrections in the PostHog copy, end to end: the mirror (real posthog SDK,
local capture server) sends each record's dimension values as ``dim_<name>`` and each
correction as a ``usage_corrected`` event; the reader (local query endpoint, HogQL parsed by
PostHog's parser) nets the corrections in records, summaries and trends, compared with an
independent Decimal computation; reconcile agrees with a store holding the corrected
records and finds a correction PostHog lost."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import tsmeter
from tests.posthog_capture import capture_server
from tests.posthog_query_server import QueryServer, query_server
from tsmeter.integrations.posthog import PostHogMirror, PostHogSettings
from tsmeter.integrations.posthog.events import NAMESPACE
from tsmeter.integrations.posthog.reader import PostHogReader
from tsmeter.integrations.posthog.reconcile import DifferenceKind, reconcile

pytest.importorskip("posthog")

T0 = datetime(2026, 3, 1, tzinfo=UTC)
END = T0 + timedelta(days=4)
MODELS = ["gpt-4o, mini", 'say "hi"', "a=b c\\", "⧵ Zürich 🚀", "plain"]
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Correction:
    """The fields of a correction the mirror sends (those of the ``Correction`` model)."""

    id: str
    record_id: str
    kind: str
    quantity_before: Decimal
    quantity_after: Decimal | None
    reason: str
    actor: str
    corrected_at: datetime
    metric_key: str
    subject_type: str
    subject_id: str
    org_id: str | None
    record_timestamp: datetime
    applied: bool = True


def _records() -> list[dict[str, Any]]:
    """60 records of ``tokens`` over four days and three subjects, with dimension values (some
    without a region)."""
    rng = random.Random(24)
    out = []
    for i in range(60):
        metadata: dict[str, Any] = {"model": MODELS[i % len(MODELS)], "note": i}
        if i % 4:
            metadata["region"] = ("eu", "us")[i % 2]
        out.append({"id": f"rec-{i}", "metricKey": "tokens", "subjectType": "org",
                    "subjectId": f"org-{i % 3}",
                    "quantity": str(Decimal(rng.randint(-500, 5000)) * CENT),
                    "timestamp": T0 + timedelta(hours=1.5 * i, microseconds=i),
                    "metadata": metadata})  # fmt: skip
    return out


def _corrections(records: list[dict[str, Any]]) -> list[Correction]:
    """Cancels, amendments, a record amended twice (the later wins), an amendment then a
    cancel, and one correction sent twice."""
    by_id = {r["id"]: r for r in records}

    def make(n: int, rid: str, kind: str, after: str | None, minutes: int) -> Correction:
        r = by_id[rid]
        return Correction(
            id=f"corr-{n}", record_id=rid, kind=kind, quantity_before=Decimal(r["quantity"]),
            quantity_after=None if after is None else Decimal(after), reason="test",
            actor="ops@example.com", corrected_at=T0 + timedelta(days=10, minutes=minutes),
            metric_key="tokens", subject_type="org", subject_id=r["subjectId"], org_id=None,
            record_timestamp=r["timestamp"],
        )  # fmt: skip

    return [
        make(1, "rec-3", "CANCEL", None, 1),
        make(2, "rec-7", "AMEND", "2.5", 2),
        make(3, "rec-11", "AMEND", "1", 3),
        make(4, "rec-11", "AMEND", "-7.25", 9),  # later: wins
        make(5, "rec-20", "AMEND", "100", 4),
        make(6, "rec-20", "CANCEL", None, 5),
        make(7, "rec-41", "AMEND", "0", 6),
        make(7, "rec-41", "AMEND", "0", 6),  # sent again: one event
        make(8, "rec-59", "CANCEL", None, 7),
    ]


def _net(records: list[dict[str, Any]], corrections: list[Correction]) -> dict[str, Decimal]:
    """Each record's quantity after its corrections (cancelled ones left out), by Decimal."""
    out = {r["id"]: Decimal(r["quantity"]) for r in records}
    latest: dict[str, Correction] = {}
    for c in corrections:
        if c.record_id not in latest or c.corrected_at >= latest[c.record_id].corrected_at:
            latest[c.record_id] = c
    for rid, c in latest.items():
        if c.kind == "CANCEL":
            del out[rid]
        else:
            assert c.quantity_after is not None
            out[rid] = c.quantity_after
    return out


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The events the mirror delivered, through the posthog SDK, for the records and their
    corrections."""
    path = tmp_path_factory.mktemp("corrections") / "usage.db"
    records = _records()
    corrections = _corrections(records)
    with capture_server() as capture:
        meter = tsmeter.connect(f"sqlite:///{path}", mirror=False)
        try:
            meter.define_metric("tokens", aggregation_type="SUM", precision=2,
                                dimensions=[{"name": "model"}, {"name": "region"}])  # fmt: skip
            settings = PostHogSettings(api_key="phc_test", host=capture.host, flush_interval=0.05)
            mirror = PostHogMirror(settings, meter, journal=str(path) + ".journal")
            meter.record_batch(records)
            assert mirror.corrections(corrections[:-1]) == len(corrections) - 1
            mirror.on_corrected(SimpleNamespace(correction=corrections[-1]))  # the bus's way
            assert mirror.flush(15)
            assert mirror.shutdown(5)
        finally:
            meter.close()
        events = capture.accepted()
    yield {"path": path, "records": records, "corrections": corrections, "events": events}


@pytest.fixture
def endpoint() -> Iterator[QueryServer]:
    with query_server() as server:
        yield server
        assert server.failures == [], "\n\n".join(server.failures)


def reader_for(server: QueryServer, **options: Any) -> PostHogReader:
    settings = PostHogSettings(host=server.url, personal_api_key=server.token,
                               project_id=server.project_id)  # fmt: skip
    return PostHogReader(settings, **options)


def test_usage_events_carry_dimension_values(mirrored: dict[str, Any]) -> None:
    """Every usage event has ``dim_model`` and ``dim_region``, exactly the record's values
    (null where it has none); no other property names the metadata."""
    recorded = {e["properties"]["recordId"]: e["properties"] for e in mirrored["events"]
                if e["event"] == "metering.usage_recorded"}  # fmt: skip
    assert len(recorded) == 60
    for r in mirrored["records"]:
        props = recorded[r["id"]]
        assert props["dim_model"] == r["metadata"]["model"]
        assert props["dim_region"] == r["metadata"].get("region")
        assert "metadata" not in props and "dim_note" not in props


def test_corrections_arrive_once_with_exact_decimal_strings(mirrored: dict[str, Any]) -> None:
    """One ``usage_corrected`` event per correction id (the repeat is the same uuid), timed at
    the record's timestamp, with decimal strings at the metric's precision; no actor."""
    sent = [e for e in mirrored["events"] if e["event"] == "metering.usage_corrected"]
    by_uuid = {e["uuid"]: e for e in sent}
    wanted = {c.id: c for c in mirrored["corrections"]}
    assert len(by_uuid) == len(wanted) == 8
    for cid, c in wanted.items():
        e = by_uuid[str(uuid.uuid5(NAMESPACE, f"metering.usage_corrected:{cid}"))]
        p = e["properties"]
        assert datetime.fromisoformat(e["timestamp"]) == c.record_timestamp
        assert (p["recordId"], p["correctionId"], p["kind"]) == (c.record_id, cid, c.kind)
        assert p["quantityBefore"] == str(c.quantity_before.quantize(CENT))
        after = c.quantity_after if c.kind == "AMEND" else Decimal(0)
        assert p["quantityAfter"] == str(after.quantize(CENT))
        assert p["precision"] == 2 and "actor" not in p
        assert e["distinct_id"] == f"org:{c.subject_id}"


def test_the_reader_nets_corrections(mirrored: dict[str, Any], endpoint: QueryServer) -> None:
    """Records, daily summaries (SUM, COUNT, MAX, MIN, LAST, AVG) and daily trends read back
    net of the corrections, digit for digit what Decimal computes; with small pages too."""
    endpoint.add_events(mirrored["events"])
    net = _net(mirrored["records"], mirrored["corrections"])
    by_id = {r["id"]: r for r in mirrored["records"]}
    groups: dict[tuple[str, datetime], list[tuple[datetime, str, Decimal]]] = {}
    for rid, q in net.items():
        r = by_id[rid]
        ts = r["timestamp"].replace(microsecond=r["timestamp"].microsecond)
        day = ts.replace(hour=0, minute=0, second=0, microsecond=0)
        groups.setdefault((r["subjectId"], day), []).append((ts, rid, q))
    for page_size in (50_000, 3):
        with reader_for(endpoint, page_size=page_size) as reader:
            got = reader.get_usage("tokens", start=T0, end=END, precision=2)
            assert {r.id: r.quantity for r in got} == {k: v.quantize(CENT) for k, v in net.items()}
            for agg in ("SUM", "COUNT", "MAX", "MIN", "LAST", "AVG"):
                summaries = reader.get_usage_summaries("tokens", "DAILY", start=T0, end=END,
                                                       aggregation=agg, precision=2)  # fmt: skip
                want = {}
                for key, items in groups.items():
                    values = [q for _, _, q in items]
                    want[key] = {
                        "SUM": sum(values, Decimal(0)), "COUNT": Decimal(len(values)),
                        "MAX": max(values), "MIN": min(values), "LAST": max(items)[2],
                        "AVG": (sum(values, Decimal(0)) / len(values)).quantize(
                            CENT, rounding=ROUND_HALF_EVEN),
                    }[agg]  # fmt: skip
                assert {(s.subject_id, s.period_start): s.total_quantity for s in summaries} == (
                    want
                ), agg
                assert all(s.record_count == len(groups[(s.subject_id, s.period_start)])
                           for s in summaries)  # fmt: skip
            trend = reader.get_trend("tokens", "DAILY", start=T0, end=END, precision=2)
            days: dict[datetime, Decimal] = {}
            for (_, day), items in groups.items():
                days[day] = days.get(day, Decimal(0)) + sum((q for _, _, q in items), Decimal(0))
            assert {p.period_start: p.total for p in trend} == days
            one = reader.get_usage("tokens", "org", "org-2", start=T0, end=END, precision=2)
            assert {r.id for r in one} == {k for k in net if by_id[k]["subjectId"] == "org-2"}


def test_reconcile_agrees_with_a_corrected_store_and_finds_a_lost_correction(
    mirrored: dict[str, Any], endpoint: QueryServer, tmp_path: Path
) -> None:
    """A store that holds the records as corrected reconciles with the PostHog copy (records
    and corrections); with one correction lost on the way, that subject-day differs."""
    net = _net(mirrored["records"], mirrored["corrections"])
    with tsmeter.connect(f"sqlite:///{tmp_path / 'primary.db'}", mirror=False) as meter:
        meter.define_metric("tokens", aggregation_type="SUM", precision=2,
                            dimensions=[{"name": "model"}, {"name": "region"}])  # fmt: skip
        meter.record_batch([{**r, "quantity": str(net[r["id"]])}
                            for r in mirrored["records"] if r["id"] in net])  # fmt: skip
        endpoint.add_events(mirrored["events"])
        with reader_for(endpoint) as reader:
            result = reconcile(meter, reader, "tokens", "DAILY", start=T0, end=END)
        assert result.ok and result.differences == [], result.differences
    lost_id = str(uuid.uuid5(NAMESPACE, "metering.usage_corrected:corr-2"))  # rec-7 -> 2.5
    with (
        query_server() as other,
        tsmeter.connect(f"sqlite:///{tmp_path / 'primary.db'}", mirror=False) as meter,
    ):
        other.add_events([e for e in mirrored["events"] if e["uuid"] != lost_id])
        with reader_for(other) as reader:
            result = reconcile(meter, reader, "tokens", "DAILY", start=T0, end=END)
        assert other.failures == []
    rec = next(r for r in mirrored["records"] if r["id"] == "rec-7")
    (d,) = result.differences
    assert (d.subject_id, d.kind) == (rec["subjectId"], DifferenceKind.DRIFT)
    assert d.difference == Decimal(rec["quantity"]) - Decimal("2.5")


def test_a_corrected_event_without_a_correction_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bus handler says so when an event carries no correction, rather than send
    nothing silently; a mirror without an API key takes nothing."""
    mirror = PostHogMirror(PostHogSettings())
    with caplog.at_level("ERROR", logger="tsmeter.posthog"):
        mirror.on_corrected(SimpleNamespace(name="usage.corrected"))
    assert "carries no correction" in caplog.text
    assert mirror.corrections([object()]) == 0
