"""The PostHog mirror with the real posthog SDK, posting to a local capture server."""

from __future__ import annotations

import gzip
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import tsmeter
from tests.posthog_capture import CaptureServer, capture_server
from tsmeter import Meter
from tsmeter.integrations.posthog import Journal, PostHogMirror, PostHogSettings, mirror_job
from tsmeter.integrations.posthog.events import NAMESPACE
from tsmeter.integrations.posthog.sdk import SdkClient

pytest.importorskip("posthog")

WAIT = 15.0  # the bound of every wait in this file


def rid_uuid(record_id: str, name: str = "metering.usage_recorded") -> str:
    """The uuid the mirror must give the event of a record."""
    return str(uuid.uuid5(NAMESPACE, f"{name}:{record_id}"))


def batch(ids: range, prefix: str = "r", **extra: Any) -> list[dict[str, Any]]:
    """Records of api_calls for three orgs, one per id."""
    return [
        {"metricKey": "api_calls", "subjectType": "org", "subjectId": f"org-{i % 3}",
         "id": f"{prefix}{i}", "timestamp": f"2026-01-05T10:{i % 60:02d}:00Z", **extra}
        for i in ids
    ]  # fmt: skip


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with capture_server() as srv:
        yield srv


@pytest.fixture
def settings(server: CaptureServer) -> PostHogSettings:
    """Fast settings: short intervals, one SDK attempt per upload, small backoffs."""
    return PostHogSettings(
        api_key="phc_test",
        host=server.host,
        flush_interval=0.05,
        sdk_retries=0,
        backoff_base=0.02,
        backoff_max=0.1,
        timeout=2.0,
    )


@pytest.fixture
def meter(tmp_path: Path) -> Iterator[Meter]:
    with tsmeter.connect(str(tmp_path / "usage.db")) as m:
        m.define_metric("api_calls", aggregation_type="COUNT", unit="calls")
        yield m


@pytest.fixture
def mirrors() -> Iterator[Callable[..., PostHogMirror]]:
    """Build mirrors that are shut down (bounded) at the end of the test."""
    made: list[PostHogMirror] = []

    def make(settings: PostHogSettings, meter: Meter | None = None, **kw: Any) -> PostHogMirror:
        mirror = PostHogMirror(settings, meter, **kw)
        made.append(mirror)
        return mirror

    yield make
    for mirror in made:
        mirror.shutdown(timeout=2.0)


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_records_arrive_as_events_on_batch(
    server: CaptureServer, settings: PostHogSettings, meter: Meter, mirrors: Any, compress: bool
) -> None:
    """Every record arrives once on /batch/ (gzip or plain) with its properties, its uuid,
    an aware UTC timestamp, no person profile and its group."""
    mirror = mirrors(replace(settings, gzip=compress), meter)
    meter.record_batch(batch(range(30)))
    meter.record("api_calls", "org", "org-9", id="single", source="api",
                 timestamp="2026-01-05T12:30:00.123456+02:00")  # fmt: skip
    assert mirror.flush(WAIT)
    assert {r.path for r in server.requests} == {"/batch/"}
    assert {r.gzipped for r in server.requests} == {compress}
    if compress:
        assert all(json.loads(gzip.decompress(r.raw)) == r.body for r in server.requests)
    body = server.requests[0].body
    assert body["api_key"] == "phc_test" and body["historical_migration"] is False
    events = {e["uuid"]: e for e in server.accepted()}
    assert len(events) == len(server.accepted()) == 31
    single = events[rid_uuid("single")]
    assert single["event"] == "metering.usage_recorded"
    assert single["distinct_id"] == "org:org-9"
    stamp = datetime.fromisoformat(single["timestamp"])
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0
    assert stamp == datetime(2026, 1, 5, 10, 30, 0, 123456, tzinfo=UTC)
    props = single["properties"]
    assert props["$process_person_profile"] is False
    assert props["$groups"] == {"company": "org-9"}
    assert {k: props[k] for k in ("metricKey", "subjectType", "subjectId", "quantity", "unit",
                                  "recordId", "source", "orgId")} == {
        "metricKey": "api_calls", "subjectType": "org", "subjectId": "org-9", "quantity": 1.0,
        "unit": "calls", "recordId": "single", "source": "api", "orgId": None,
    }  # fmt: skip
    assert (props["units"], props["precision"]) == (1_000_000, 6)
    assert set(events) == {rid_uuid(f"r{i}") for i in range(30)} | {rid_uuid("single")}
    status = mirror.status()
    assert (status.mirrored, status.failed, status.pending, status.dropped) == (31, 0, 0, 0)


def test_each_record_carries_its_metrics_precision(
    server: CaptureServer, settings: PostHogSettings, tmp_path: Path, mirrors: Any
) -> None:
    """Units and precision come from the record's own metric: an org's definition over the
    global one, a metric defined after the mirror started, and once the meter has closed."""
    meter = tsmeter.connect(str(tmp_path / "scopes.db"))
    meter.define_metric("spend", precision=2)
    meter.define_metric("spend", precision=0, org_id="acme")
    server.fail(times=None)
    mirror = mirrors(settings, meter)
    meter.define_metric("late", precision=9)
    amounts = {"g": ("spend", None, "12.34"), "o": ("spend", "acme", "7"),
               "l": ("late", None, "0.000000001"), "n": ("spend", "other", "-0.05")}  # fmt: skip
    meter.record_batch([
        {"id": rid, "metricKey": key, "subjectType": "org", "subjectId": "s", "orgId": org,
         "quantity": amount, "timestamp": "2026-01-05T10:00:00Z"}
        for rid, (key, org, amount) in amounts.items()
    ])  # fmt: skip
    meter.close()
    server.recover()
    assert mirror.flush(WAIT)
    got = {e["properties"]["recordId"]: e["properties"] for e in server.accepted()}
    for rid, (_, _, amount) in amounts.items():
        p = got[rid]
        assert Decimal(p["units"]).scaleb(-p["precision"]) == Decimal(amount), rid
        assert p["quantity"] == float(Decimal(amount))
    assert {rid: got[rid]["precision"] for rid in amounts} == {"g": 2, "o": 0, "l": 9, "n": 2}


def test_the_capture_mode_is_pinned(
    server: CaptureServer,
    settings: PostHogSettings,
    meter: Meter,
    mirrors: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POSTHOG_CAPTURE_MODE=v1 in the environment does not move the mirror off /batch/."""
    monkeypatch.setenv("POSTHOG_CAPTURE_MODE", "v1")
    mirror = mirrors(settings, meter)
    meter.record_batch(batch(range(5)))
    assert mirror.flush(WAIT)
    assert {r.path for r in server.requests} == {"/batch/"}
    assert len(server.accepted_uuids()) == 5


def test_the_sdk_still_tells_whether_its_queue_drained(settings: PostHogSettings) -> None:
    """The drain check reads the SDK's queue; an SDK upgrade that removes it fails here."""
    sdk = SdkClient(settings)
    try:
        assert sdk.unfinished() == 0
    finally:
        sdk.shutdown(2.0)


def test_a_batch_recorded_again_keeps_its_uuids(
    server: CaptureServer, settings: PostHogSettings, meter: Meter, mirrors: Any, tmp_path: Path
) -> None:
    """A retried batch (stored ids) is skipped while known, and another mirror (a restart)
    sends the same uuids again: duplicates only by uuid."""
    mirror = mirrors(settings, meter)
    meter.record_batch(batch(range(20)))
    assert mirror.flush(WAIT)
    first = [e["uuid"] for e in server.accepted()]
    meter.record_batch(batch(range(20)))
    assert mirror.flush(WAIT)
    assert mirror.status().duplicates == 20
    mirror.shutdown(WAIT)
    again = mirrors(settings, meter)
    meter.record_batch(batch(range(20)))
    assert again.flush(WAIT)
    resent = [e["uuid"] for e in server.accepted()][len(first) :]
    assert sorted(resent) == sorted(first) == sorted(rid_uuid(f"r{i}") for i in range(20))


def test_no_loss_while_the_server_fails_for_a_while(
    server: CaptureServer, settings: PostHogSettings, meter: Meter, mirrors: Any
) -> None:
    """500s for a while: every event arrives, none twice, and the re-sends are counted."""
    server.fail(times=6, status=500)
    mirror = mirrors(replace(settings, batch_size=25), meter)
    for start in range(0, 200, 50):
        meter.record_batch(batch(range(start, start + 50)))
    expected = {rid_uuid(f"r{i}") for i in range(200)}
    assert server.wait_for(lambda: server.accepted_uuids() >= expected, WAIT)
    assert mirror.flush(WAIT)
    accepted = [e["uuid"] for e in server.accepted()]
    assert sorted(accepted) == sorted(expected)
    assert any(r.status == 500 for r in server.requests)
    status = mirror.status()
    assert status.mirrored == 200 and status.failed == 0 and status.retried > 0
    assert status.last_error is not None and "500" in status.last_error


def test_counts_when_the_server_never_recovers(
    server: CaptureServer,
    settings: PostHogSettings,
    meter: Meter,
    mirrors: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every event fails after its retries: counted as failed, logged, kept in the journal;
    nothing is counted as mirrored."""
    server.fail(times=None, status=503)
    mirror = mirrors(replace(settings, retries=2), meter)
    with caplog.at_level(logging.ERROR, logger="tsmeter.posthog"):
        meter.record_batch(batch(range(10)))
        assert server.wait_for(lambda: mirror.status().failed == 10, WAIT)
    status = mirror.status()
    assert (status.mirrored, status.pending, status.retried) == (0, 0, 20)
    assert "gave up on" in caplog.text
    mirror.shutdown(WAIT)
    journal = Journal(str(tmp_path / "usage.db"))
    try:
        assert journal.unsent_counts() == {"pending": 0, "failed": 10}
        [run] = journal.runs()
        assert (run.failed, run.mirrored, run.stopped_at is not None) == (10, 0, True)
    finally:
        journal.close()


def test_a_full_sdk_queue_is_detected_and_resent(
    server: CaptureServer, settings: PostHogSettings, meter: Meter, mirrors: Any
) -> None:
    """With a tiny SDK queue, capture() refuses events: they are offered again, not lost."""
    mirror = mirrors(replace(settings, queue_size=2, batch_size=50), meter)
    meter.record_batch(batch(range(60)))
    assert mirror.flush(WAIT)
    status = mirror.status()
    assert status.rejected > 0 and status.failed == 0 and status.mirrored == 60
    assert sorted(e["uuid"] for e in server.accepted()) == sorted(
        rid_uuid(f"r{i}") for i in range(60)
    )


def test_a_full_buffer_drops_counted_then_a_backfill_sends_them(
    server: CaptureServer,
    settings: PostHogSettings,
    meter: Meter,
    mirrors: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Records that find no room are counted and logged, their range is journaled, and a
    backfill over it sends them with historical_migration=true and the same uuids."""
    mirror = mirrors(replace(settings, buffer_size=5, flush_interval=5.0), meter)
    with caplog.at_level(logging.ERROR, logger="tsmeter.posthog"):
        meter.record_batch(batch(range(20)))
    assert mirror.status().dropped == 15
    assert "not mirrored" in caplog.text
    assert mirror.flush(WAIT)
    mirror._persist(force=True)
    journal = Journal(str(tmp_path / "usage.db"))
    try:
        [dropped] = journal.dropped()
        assert (dropped.metric_key, dropped.records) == ("api_calls", 15)
        result = mirror.backfill(meter, "api_calls", "2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z")
        assert (result.records, result.sent, result.failed) == (20, 20, 0)
        assert journal.dropped() == []
    finally:
        journal.close()
    historical = [r for r in server.requests if r.body.get("historical_migration") is True]
    assert sum(len(r.body["batch"]) for r in historical) == 20
    assert server.accepted_uuids() == {rid_uuid(f"r{i}") for i in range(20)}


def test_shutdown_is_bounded_and_keeps_what_was_not_sent(
    server: CaptureServer, settings: PostHogSettings, meter: Meter, mirrors: Any, tmp_path: Path
) -> None:
    """With PostHog down, shutdown(1) returns in about a second; the unsent events stay in
    the journal and the next mirror sends them."""
    server.fail(times=None)
    mirror = mirrors(replace(settings, backoff_base=0.5, backoff_max=1.0), meter)
    meter.record_batch(batch(range(10)))
    started = time.monotonic()
    assert mirror.shutdown(timeout=1.0) is False
    assert time.monotonic() - started < 2.5
    server.recover()
    later = mirrors(settings, journal=str(tmp_path / "usage.db"))
    assert later.flush(WAIT)
    assert server.accepted_uuids() == {rid_uuid(f"r{i}") for i in range(10)}


def test_what_is_buffered_when_the_meter_closes_goes_to_the_journal(
    server: CaptureServer, settings: PostHogSettings, tmp_path: Path, mirrors: Any
) -> None:
    """Meter closed before the mirror (the order at exit): its buffered records are still
    built and kept in the journal as pending, then sent by the next mirror."""
    path = str(tmp_path / "closing.db")
    meter = tsmeter.connect(path)
    meter.define_metric("api_calls", aggregation_type="COUNT")
    server.fail(times=None)
    mirror = mirrors(replace(settings, backoff_base=5.0, backoff_max=5.0), meter)
    meter.record_batch(batch(range(7)))
    meter.close()
    assert mirror.shutdown(timeout=0.5) is False
    assert mirror.status().pending == 7
    journal = Journal(path)
    try:
        assert journal.unsent_counts() == {"pending": 7, "failed": 0}
    finally:
        journal.close()
    server.recover()
    assert mirrors(settings, journal=path).flush(WAIT)
    assert server.accepted_uuids() == {rid_uuid(f"r{i}") for i in range(7)}
    assert {e["properties"]["unit"] for e in server.accepted()} <= {"", "calls"}


def test_recording_never_fails_or_waits_for_the_mirror(
    settings: PostHogSettings, meter: Meter, mirrors: Any
) -> None:
    """PostHog unreachable (nothing listens) and a tiny buffer: records are stored, fast."""
    dead = replace(settings, host="http://127.0.0.1:9", buffer_size=3, timeout=5.0)
    mirror = mirrors(dead, meter)
    started = time.monotonic()
    for i in range(50):
        meter.record("api_calls", "org", "org-1", id=f"d{i}")
    meter.record_batch(batch(range(100), prefix="b"))
    assert time.monotonic() - started < 5.0
    assert len(meter.get_usage("api_calls", limit=None)) == 150
    status = mirror.status()
    assert status.dropped >= 147 and status.mirrored == 0


def test_threshold_and_aggregation_events(
    server: CaptureServer, settings: PostHogSettings, meter: Meter, mirrors: Any
) -> None:
    """Threshold crossings and aggregated summaries arrive with their fields; the same
    summary sent again keeps its uuid."""
    mirror = mirrors(settings, meter)
    threshold = meter.create_threshold("api_calls", "org", 3, "org-1", period_type="DAILY")
    now = datetime.now(UTC).replace(microsecond=0)
    meter.record_batch(
        [
            {
                "metricKey": "api_calls",
                "subjectType": "org",
                "subjectId": "org-1",
                "id": f"t{i}",
                "timestamp": now.isoformat(),
            }
            for i in range(4)
        ]
    )
    meter.evaluate_thresholds()
    meter.aggregate("DAILY")
    assert mirror.flush(WAIT)
    events = server.accepted()
    exceeded = [e for e in events if e["event"] == "metering.threshold_exceeded"]
    [alert] = [a for a in meter.list_alerts() if a.level == "exceeded"]
    assert [e["uuid"] for e in exceeded] == [
        str(uuid.uuid5(NAMESPACE, f"metering.threshold_exceeded:{alert.id}"))
    ]
    props = exceeded[0]["properties"]
    assert (props["thresholdId"], props["actualValue"], props["level"]) == (
        threshold.id, 4.0, "exceeded",
    )  # fmt: skip
    assert props["$process_person_profile"] is False
    [summary] = [e for e in events if e["event"] == "metering.usage_aggregated"]
    sp = summary["properties"]
    assert (sp["periodType"], sp["totalQuantity"], sp["recordCount"], sp["unit"]) == (
        "DAILY", 4.0, 4, "calls",
    )  # fmt: skip
    assert datetime.fromisoformat(summary["timestamp"]) == datetime.fromisoformat(sp["periodStart"])
    meter.aggregate("DAILY", now.replace(hour=0, minute=0, second=0), now + timedelta(seconds=1))
    assert mirror.flush(WAIT)
    assert mirror.status().duplicates >= 1
    assert [e["uuid"] for e in server.accepted()].count(summary["uuid"]) == 1


def test_the_flush_job(server: CaptureServer, settings: PostHogSettings, meter: Meter,
                       mirrors: Any) -> None:  # fmt: skip
    """``posthog-flush`` sends what is buffered and returns the mirror's counts."""
    mirror = mirrors(replace(settings, flush_interval=10.0), meter)
    meter.record_batch(batch(range(3)))
    job = mirror_job(mirror)
    assert job.name == "posthog-flush"
    counts = job.run(meter)
    assert counts["mirrored"] == 3 and counts["pending"] == 0 and counts["failed"] == 0


def test_a_mirror_without_a_key_is_off(meter: Meter, mirrors: Any) -> None:
    """No API key: nothing starts, recording is untouched, status says off."""
    mirror = mirrors(PostHogSettings(), meter)
    meter.record("api_calls", "org", "org-1")
    status = mirror.status()
    assert (status.enabled, status.running, status.pending, status.dropped) == (
        False, False, 0, 0,
    )  # fmt: skip
    assert mirror.flush(1.0) and mirror.shutdown(1.0)
