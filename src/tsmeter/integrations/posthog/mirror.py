"""The PostHog mirror: every stored record, summary, threshold event and correction, sent to
PostHog as an analytics event, without ever failing or slowing down recording.

::

    from tsmeter.integrations.posthog import PostHogMirror, PostHogSettings

    # on a meter from tsmeter.connect(..., mirror=False): a meter has one mirror
    mirror = PostHogMirror(PostHogSettings.from_env(), meter)   # attaches to the meter
    meter.record("api_calls", "org", "acme")                    # -> metering.usage_recorded
    mirror.status()                                             # mirrored / retried / failed ...
    mirror.shutdown(timeout=10)                                 # bounded

How: the meter's record sink and event handlers only append to the mirror's own bounded
buffer (no I/O, no event building). A background thread builds the events, feeds them to
the posthog SDK, asks it to flush, and settles each event: *mirrored* when the SDK's queue
drained and its ``on_error`` did not name the event (see :mod:`tsmeter.integrations.posthog.sdk`),
otherwise re-sent, with the same uuid, after ``backoff_base * 2**(n-1)`` seconds, up to
``retries`` times, then *failed* (logged, and kept in the journal). An event the SDK
refuses (``capture()`` returned None: its queue is full) is *rejected* and offered again
shortly. Records that find the buffer full are *dropped*: counted, logged, and their time
range kept in the journal for ``tsmeter posthog backfill``. Nothing is lost silently.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tsmeter.domain import Model, RecordRow
from tsmeter.domain import events as domain_events
from tsmeter.domain.events import (
    MetricDefined,
    MetricDeleted,
    MetricUpdated,
    ThresholdEvent,
    UsageAggregated,
)
from tsmeter.domain.modelio import TimeLike
from tsmeter.domain.validation import from_ns
from tsmeter.errors import ConflictError
from tsmeter.integrations.posthog.backfill import BackfillResult, backfill
from tsmeter.integrations.posthog.builder import CorrectionItem, SummaryRequest
from tsmeter.integrations.posthog.events import CaptureEvent
from tsmeter.integrations.posthog.journal import Journal, now_ns
from tsmeter.integrations.posthog.sdk import SdkClient
from tsmeter.integrations.posthog.sending import Item, Sender, _Entry, what
from tsmeter.integrations.posthog.settings import PostHogSettings

if TYPE_CHECKING:
    from tsmeter.metering.meter import Meter

__all__ = ["MirrorStatus", "PostHogMirror", "journal_path_of"]

log = logging.getLogger("tsmeter.posthog")


class MirrorStatus(Model):
    """A mirror's counts since it started.

    ``mirrored``: events PostHog accepted; ``retried``: re-sends scheduled (after a failed
    upload or a refusal); ``failed``: events given up on (kept in the journal);
    ``pending``: events not settled yet; ``dropped``: events refused for lack of room in
    the buffer; ``rejected``: times the SDK refused an event (queue full); ``duplicates``:
    events skipped because the same uuid was pending or just sent.
    """

    enabled: bool
    running: bool
    mirrored: int = 0
    retried: int = 0
    failed: int = 0
    pending: int = 0
    dropped: int = 0
    rejected: int = 0
    duplicates: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_sent_at: datetime | None = None


def journal_path_of(meter: Meter | None) -> str | None:
    """The file of a Meter's state (its catalog), where the journal goes; None without one."""
    path = meter.capabilities.state_path if meter is not None else None
    return path if path is not None and path != ":memory:" else None


class PostHogMirror(Sender):
    """Mirrors a Meter's records, summaries and threshold events to PostHog.

    Off (every method a no-op) unless ``settings`` has an API key. With ``meter`` it
    attaches at once (:meth:`attach`). ``journal`` is the SQLite file of the journal
    (default: ``settings.state_path``, else the meter's state file; none for an in-memory
    store). Example: ``PostHogMirror(PostHogSettings.from_env(), meter)``.
    """

    def __init__(
        self,
        settings: PostHogSettings,
        meter: Meter | None = None,
        *,
        journal: str | None = None,
    ) -> None:
        self._init_state(settings, meter)
        if not settings.enabled:
            self._meter = self._builder.meter = meter
            return
        if meter is not None:
            _refuse_a_second(meter, self)
        path = journal or settings.state_path or journal_path_of(meter)
        self._journal = Journal(path) if path else None
        self._sdk = SdkClient(settings)
        if self._journal is not None:
            self._journal.start_run(self.run_id, now_ns())
            for event, attempts in self._journal.take_pending(settings.buffer_size):
                self._ready.append(_Entry(event, attempts))
        self._thread = threading.Thread(target=self._run, name="tsmeter-posthog", daemon=True)
        self._thread.start()
        atexit.register(_shutdown_at_exit, weakref.ref(self))
        if meter is not None:
            self.attach(meter)

    @property
    def enabled(self) -> bool:
        """Whether the mirror sends anything (an API key is configured)."""
        return self.settings.enabled

    # -- wiring -----------------------------------------------------------------------
    def attach(self, meter: Meter) -> None:
        """Mirror ``meter``'s records (a record sink), threshold events and aggregation runs.

        Example: ``mirror.attach(meter)``.
        """
        if self.enabled and not self._closed:
            _refuse_a_second(meter, self)
        self.detach()
        self._meter = self._builder.meter = meter
        if self._closed or not self.enabled:
            return
        builder = self._builder
        self._detach += [
            meter.subscribe(MetricDefined, lambda e: builder.learn(e.metric)),
            meter.subscribe(MetricUpdated, lambda e: builder.learn(e.metric)),
            meter.subscribe(MetricDeleted, lambda e: builder.forget(e.metric)),
        ]
        builder.prime()  # the precisions of its records, even once the store is closed
        self._detach += [
            meter.add_record_sink(self.rows),
            meter.subscribe(ThresholdEvent, self.on_threshold),
            meter.subscribe(UsageAggregated, self.on_aggregated),
        ]
        corrected = getattr(domain_events, "UsageCorrected", None)
        if isinstance(corrected, type) and issubclass(corrected, domain_events.Event):
            self._detach.append(meter.subscribe(corrected, self.on_corrected))
        meter.mirror = self

    def detach(self) -> None:
        """Stop receiving from the meter (what is buffered is still sent)."""
        while self._detach:
            self._detach.pop()()
        if self._meter is not None and self._meter.mirror is self:
            self._meter.mirror = None

    def rows(self, rows: Sequence[RecordRow]) -> None:
        """The record sink: buffer stored rows (cheap; never raises for lack of room)."""
        if not rows or self._sdk is None:
            return
        with self._cond:
            room = self.settings.buffer_size - self._pending() if not self._closed else 0
            if room >= len(rows):
                self._ready.extend(rows)
            else:
                self._ready.extend(rows[: max(room, 0)])
                self._drop_rows(rows[max(room, 0) :])
            if len(self._ready) >= self.settings.batch_size:
                self._cond.notify_all()

    def on_threshold(self, event: ThresholdEvent) -> None:
        """Handler of threshold events: buffer it."""
        self._offer(event)

    def on_aggregated(self, event: UsageAggregated) -> None:
        """Handler of aggregation runs: buffer a request to send the run's summaries."""
        result = event.result
        if result.range_start is not None and result.range_end is not None:
            self._offer(SummaryRequest(result.period_type, result.range_start, result.range_end))

    def corrections(self, corrections: Iterable[Any]) -> int:
        """Buffer the ``usage_corrected`` events of ``corrections`` (``Correction`` models:
        cancels and amendments of stored records; see
        :func:`~tsmeter.integrations.posthog.events.correction_event`), built on the sender
        thread like every event; a correction whose id was not applied now (``applied``
        False: a repeat) is sent again with its uuid, which PostHog counts once. Returns how
        many found room. Example: ``mirror.corrections([meter.cancel_record(...)])``."""
        return sum(self._offer(CorrectionItem(c)) for c in corrections)

    def on_corrected(self, event: Any) -> None:
        """Handler of the meter's ``usage.corrected`` event: the correction (or corrections)
        it carries are buffered (see :meth:`corrections`)."""
        found = getattr(event, "corrections", None)
        if found is None:
            single = getattr(event, "correction", None)
            if single is None:
                log.error("PostHog mirror: %r carries no correction; nothing sent", event)
                return
            found = [single]
        self.corrections(found)

    def enqueue(self, events: Iterable[CaptureEvent]) -> int:
        """Buffer ready-made events (e.g. from :mod:`tsmeter.integrations.posthog.events`); return
        how many
        found room (the others are counted as dropped and kept in the journal as failed)."""
        return sum(self._offer(_Entry(e)) for e in events)

    def _offer(self, item: Item) -> bool:
        if self._sdk is None:
            return False
        with self._cond:
            if not self._closed and self._pending() < self.settings.buffer_size:
                self._ready.append(item)
                return True
            self._n["dropped"] += 1
        log.error(
            "PostHog mirror: no room for %s (buffer full or mirror stopped); dropped", what(item)
        )
        if isinstance(item, _Entry):
            with self._cond:
                self._to_journal.append((item.event, "failed", item.attempts, "buffer full"))
        return False

    def _drop_rows(self, rows: Sequence[RecordRow]) -> None:
        """Count rows that found no room and widen their metric's dropped range (locked)."""
        self._n["dropped"] += len(rows)
        for row in rows:
            key = (row.metric_key, row.org_id)
            lo, hi, n = self._dropped_ranges.get(key, (row.ts, row.ts, 0))
            self._dropped_ranges[key] = (min(lo, row.ts), max(hi, row.ts), n + 1)
        first, last = min(r.ts for r in rows), max(r.ts for r in rows)
        log.error(
            "PostHog mirror buffer full (%d events): %d records not mirrored, %s to %s;"
            " run `tsmeter posthog status` for the backfill",
            self.settings.buffer_size,
            len(rows),
            from_ns(first).isoformat(),
            from_ns(last).isoformat(),
        )

    # -- status, flush, shutdown ------------------------------------------------------
    def status(self) -> MirrorStatus:
        """The counts so far. Example: ``mirror.status().failed``."""
        with self._cond:
            return MirrorStatus(
                enabled=self.enabled,
                running=self._thread is not None and self._thread.is_alive(),
                pending=self._pending(),
                last_error=self._last_error,
                last_error_at=None if self._last_error_at is None else from_ns(self._last_error_at),
                last_sent_at=None if self._last_sent_at is None else from_ns(self._last_sent_at),
                **self._n,
            )

    def flush(self, timeout: float = 10.0) -> bool:
        """Send everything buffered now (retries too, once) and wait until nothing is pending,
        at most ``timeout`` seconds; return whether nothing is pending."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                return self._pending() == 0
            self._expedite = True
            self._cond.notify_all()
            while self._pending():
                remaining = deadline - time.monotonic()
                busy = self._ready or self._building or self._inflight or self._expedite
                if remaining <= 0 or (not busy and self._retries[0].due > deadline):
                    return False
                self._cond.wait(min(remaining, 0.5))
            return True

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop mirroring: flush for at most ``timeout`` seconds, stop the sender and the SDK;
        events still pending are kept in the journal for the next mirror. Returns whether
        everything was sent. Example: ``mirror.shutdown(timeout=10)``."""
        deadline = time.monotonic() + timeout
        self.detach()
        if self._sdk is None or self._stopping:
            return self._pending() == 0
        sent = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(deadline - time.monotonic(), 0.05))
        with self._cond:
            self._closed = True
            leftovers = self._leftovers()
        self._sdk.shutdown(max(deadline - time.monotonic(), 0.05))
        if leftovers:
            where = "kept in the journal" if self._journal is not None else "lost (no journal)"
            log.warning("PostHog mirror stopped with %d events not sent: %s", len(leftovers), where)
        self._persist(force=True, stopped=True, extra=leftovers)
        if self._journal is not None:
            self._journal.close()
        return sent and not leftovers

    def backfill(
        self,
        meter: Meter,
        metric_key: str,
        start: TimeLike,
        end: TimeLike,
        *,
        org_id: str | None = None,
        timeout: float = 60.0,
    ) -> BackfillResult:
        """Send the records of ``metric_key`` in ``[start, end)`` through PostHog's historical
        migration path (a second SDK client); see
        :func:`tsmeter.integrations.posthog.backfill.backfill`.
        Example: ``mirror.backfill(meter, "api_calls", "2026-01-01", "2026-02-01")``."""
        return backfill(
            self.settings,
            meter,
            metric_key,
            start,
            end,
            org_id=org_id,
            timeout=timeout,
            journal=self._journal,
        )


def _shutdown_at_exit(ref: weakref.ref[PostHogMirror]) -> None:
    """At interpreter exit: a short bounded shutdown of a mirror nobody shut down."""
    mirror = ref()
    if mirror is not None and not mirror._stopping:
        mirror.shutdown(timeout=2.0)


def _refuse_a_second(meter: Meter, mirror: PostHogMirror) -> None:
    """A meter mirrors to PostHog through one mirror: a second would send every event twice."""
    other = meter.mirror
    live = isinstance(other, PostHogMirror) and other.enabled and not other._closed
    if live and other is not mirror:
        raise ConflictError(
            "this meter already has a PostHog mirror (meter.mirror; tsmeter.connect()"
            " attaches one when TSMETER_POSTHOG_API_KEY is set): a second would send every"
            " event twice. Use meter.mirror, shut it down first, or open the meter with"
            " tsmeter.connect(..., mirror=False) to attach your own"
        )
