"""Backfills: old records sent to PostHog through its historical-migration path.

A backfill reads one metric's records of a time range from the store and sends them
with a second SDK client made with ``historical_migration=True`` (PostHog ingests them
apart from live traffic). The events are exactly those the live mirror sends (same uuid
per record id), so backfilling records that were mirrored already duplicates them only
by uuid. Each chunk is confirmed like the mirror's batches (drained, no ``on_error``);
events still failing after ``retries`` re-sends, or not confirmed within ``timeout``
seconds, are counted as failed and kept in the journal (``tsmeter posthog retry``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tsmeter.domain import Model
from tsmeter.domain.modelio import TimeLike, ns
from tsmeter.errors import ValidationError
from tsmeter.integrations.posthog.events import CaptureEvent, record_event
from tsmeter.integrations.posthog.journal import Journal, now_ns
from tsmeter.integrations.posthog.sdk import SdkClient
from tsmeter.integrations.posthog.settings import ENV, PostHogSettings

if TYPE_CHECKING:
    from tsmeter.metering.meter import Meter

__all__ = ["BackfillResult", "backfill"]


class BackfillResult(Model):
    """What a backfill did: records read, events PostHog accepted, events that failed."""

    metric_key: str
    records: int
    sent: int
    failed: int
    seconds: float
    last_error: str | None = None


def backfill(
    settings: PostHogSettings,
    meter: Meter,
    metric_key: str,
    start: TimeLike,
    end: TimeLike,
    *,
    org_id: str | None = None,
    timeout: float = 60.0,
    journal: Journal | None = None,
    progress: Callable[[int], None] | None = None,
) -> BackfillResult:
    """Send the records of ``metric_key`` in ``[start, end)`` as historical events.

    ``timeout`` bounds each chunk of ``settings.batch_size`` events. Failed events go to
    ``journal`` when given, and a dropped range the backfill covered is cleared there.
    ``progress(n)`` is called after each chunk with the number of its records.
    Example: ``backfill(settings, meter, "api_calls", "2026-01-01T00:00:00Z",
    "2026-02-01T00:00:00Z")``.
    """
    if not settings.enabled:
        raise ValidationError(ENV["api_key"], "not set: PostHog is not configured")
    lo, hi = ns("start", start), ns("end", end)
    if lo is None or hi is None or hi <= lo:
        raise ValidationError("end", "must be after start")
    metric = meter.get_metric(metric_key, org_id)
    started = time.monotonic()
    records = sent = 0
    failed: list[tuple[CaptureEvent, str, int, str | None]] = []
    sdk = SdkClient(settings, historical=True)
    try:
        chunk: list[CaptureEvent] = []
        for record in meter.iter_usage(metric_key, start=start, end=end, org_id=org_id):
            records += 1
            row = record.to_row(metric.precision, metric.rounding)
            chunk.append(record_event(row, settings, unit=metric.unit, precision=metric.precision,
                                      dimensions=metric.dimension_names))  # fmt: skip
            if len(chunk) >= settings.batch_size:
                sent += _send(sdk, chunk, settings, timeout, failed)
                if progress is not None:
                    progress(len(chunk))
                chunk = []
        if chunk:
            sent += _send(sdk, chunk, settings, timeout, failed)
            if progress is not None:
                progress(len(chunk))
    finally:
        sdk.shutdown(2.0)
    if journal is not None:
        journal.save_unsent(failed, now_ns())
        if not failed:
            journal.clear_dropped(metric.key, org_id, lo, hi)
    return BackfillResult(
        metric_key=metric.key,
        records=records,
        sent=sent,
        failed=len(failed),
        seconds=round(time.monotonic() - started, 3),
        last_error=failed[-1][3] if failed else None,
    )


def _send(
    sdk: SdkClient,
    events: Sequence[CaptureEvent],
    settings: PostHogSettings,
    timeout: float,
    failed: list[tuple[CaptureEvent, str, int, str | None]],
) -> int:
    """Send ``events`` until each is confirmed, failed ``retries`` times, or the chunk's
    ``timeout`` ran out; append the failures to ``failed``; return how many were sent."""
    deadline = time.monotonic() + timeout
    waiting = {e.uuid: (e, 0) for e in events}
    sent = 0
    last_error: str | None = None
    while waiting:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            last_error = last_error or f"not confirmed within {timeout:g} s"
            break
        captured = [uid for uid, (event, _) in waiting.items() if sdk.capture(event)]
        if not captured:  # the SDK refused everything (its queue is full): give it a moment
            last_error = "the PostHog SDK refused the events (queue full)"
            time.sleep(min(0.05, remaining))
        if not sdk.flush(max(remaining, 0.0)):
            last_error = f"not confirmed within {timeout:g} s"
            break
        errors = sdk.take_errors()
        for uid in captured:
            event, attempts = waiting[uid]
            error = errors.get(uid)
            if error is None:
                sent += 1
                del waiting[uid]
                continue
            last_error = error
            if attempts + 1 > settings.retries:
                failed.append((event, "failed", attempts + 1, error))
                del waiting[uid]
            else:
                waiting[uid] = (event, attempts + 1)
        if waiting and any(uid in errors for uid in captured):
            attempt = max(a for _, a in waiting.values())
            delay = min(settings.backoff_base * 2.0 ** max(attempt - 1, 0), settings.backoff_max)
            pause = delay * (1 - random.random() / 2)
            if time.monotonic() + pause >= deadline:
                last_error = last_error or f"not confirmed within {timeout:g} s"
                break
            time.sleep(pause)
    failed += [(event, "failed", attempts, last_error) for event, attempts in waiting.values()]
    return sent
