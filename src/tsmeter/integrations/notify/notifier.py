"""The Notifier: the delivery worker, and an intake for threshold events from a bus.

The monitor queues an alert's deliveries in the transaction that opens it (see
:mod:`tsmeter.limits.monitor`); ``handle`` queues those of events published by other code, and
adds nothing for a delivery already queued. Neither touches the network. A background
thread, or ``deliver_pending`` called by a job or ``tsmeter notifications deliver``, sends
what is due, several deliveries at once, so one hanging target does not hold up the others;
any failure of one delivery is recorded as that delivery's, and the pass goes on.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

from tsmeter.domain.events import Event, EventBus, ThresholdEvent
from tsmeter.domain.validation import parse_timestamp, to_ns
from tsmeter.errors import StorageUnavailableError, ValidationError
from tsmeter.integrations.notify.channels import (
    DeliveryError,
    build_email,
    post_webhook,
    send_email,
)
from tsmeter.integrations.notify.log import (
    Channel,
    Claimed,
    Delivery,
    DeliveryCounts,
    DeliveryLog,
    DeliveryStatus,
    NewDelivery,
)
from tsmeter.integrations.notify.plan import deliveries_for, delivery_id
from tsmeter.integrations.notify.render import one_line
from tsmeter.integrations.notify.settings import NotifySettings
from tsmeter.ports import Capabilities, DeliveryQueue

__all__ = ["Notifier", "delivery_id", "log_path_of"]

log = logging.getLogger("tsmeter.notify")

_NS = 1_000_000_000


class _HasEvents(Protocol):
    """Anything with an event bus, such as a :class:`~tsmeter.metering.meter.Meter`."""

    @property
    def events(self) -> EventBus: ...


class _HasState(_HasEvents, Protocol):
    """An event source that knows its state file, such as a Meter."""

    @property
    def capabilities(self) -> Capabilities: ...


def log_path_of(meter: _HasState) -> str:
    """The file that holds a Meter's state (its catalog), where its delivery log is unless
    bootstrap gave it a shared queue (``capabilities.deliveries``, see
    :meth:`Notifier.for_meter`)."""
    path = meter.capabilities.state_path
    if path is None:
        raise ValidationError("log_path", "this store keeps no state file; give log_path")
    return path


def _shown(channel: Channel, target: str) -> str:
    """The target as logged: a webhook URL without credentials, path or query. Never raises:
    a target that is not a valid URL (an older version's) is still logged."""
    if channel is Channel.EMAIL:
        return one_line(target)
    try:
        parts = urlsplit(target)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an invalid URL)"
    return one_line(f"{parts.scheme}://{host}{port}/…")


class Notifier:
    """Delivers threshold events by email and webhook, through a durable delivery log.

    The log is ``queue`` (a :class:`~tsmeter.ports.DeliveryQueue`, such as a fleet's shared
    one; left open by :meth:`close`) or else the SQLite file ``log_path`` (usually the Meter's
    state file); :meth:`for_meter` picks the Meter's. With ``worker=True`` a daemon thread
    delivers in the background; otherwise call :meth:`deliver_pending`. Example::

        notifier = Notifier.for_meter(meter, NotifySettings.from_env())
        meter.evaluate_thresholds()      # events -> deliveries -> emails, webhooks
        notifier.close()
    """

    def __init__(
        self,
        settings: NotifySettings | None,
        log_path: str | None = None,
        *,
        worker: bool = True,
        queue: DeliveryQueue | None = None,
    ) -> None:
        if (queue is None) == (log_path is None):
            raise ValidationError("log_path", "give either log_path or queue, not both or neither")
        self.settings = settings if settings is not None else NotifySettings.from_env()
        self._log: DeliveryQueue = queue if queue is not None else DeliveryLog(str(log_path))
        self._owns_log = queue is None  # a queue handed in belongs to whoever made it
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._backlog: list[NewDelivery] = []
        self._backlog_lock = threading.Lock()
        self._detach: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        self._handoff = threading.Lock()  # who closes the log: close(), or a late worker
        self._worker_done = False
        self._abandoned = False
        self._warned_waiting = 0
        if worker:
            self._thread = threading.Thread(target=self._run, name="tsmeter-notify", daemon=True)
            self._thread.start()

    @classmethod
    def for_meter(
        cls,
        meter: _HasState,
        settings: NotifySettings | None = None,
        *,
        worker: bool = True,
        attach: bool = True,
    ) -> Notifier:
        """A Notifier on ``meter``'s delivery queue (``capabilities.deliveries`` where
        bootstrap set one, else the log in its state file), attached to its events unless
        ``attach=False`` (a worker that only sends what the monitor queued)."""
        queue = meter.capabilities.deliveries
        if queue is not None:
            notifier = cls(settings, worker=worker, queue=queue)
        else:
            notifier = cls(settings, log_path_of(meter), worker=worker)
        if attach:
            notifier.attach(meter)
        return notifier

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- intake -------------------------------------------------------------------------
    def attach(self, source: _HasEvents | EventBus) -> Callable[[], None]:
        """Subscribe :meth:`handle` to every :class:`ThresholdEvent` on ``source`` (a Meter or
        an EventBus); returns the unsubscribe function (also called by :meth:`close`)."""
        bus = source if isinstance(source, EventBus) else source.events
        unsubscribe = bus.subscribe(ThresholdEvent, self.handle)
        self._detach.append(unsubscribe)
        return unsubscribe

    def handle(self, event: Event) -> None:
        """Log one delivery per notify email and one for the webhook of a threshold event;
        an (alert, event, channel, target) that is logged already adds nothing. Never
        waits for the network; other events are ignored."""
        if not isinstance(event, ThresholdEvent) or self._stop.is_set():
            return
        items = deliveries_for(event)
        if not items:
            return
        try:
            added = self._log.enqueue(items, time.time_ns())
        except StorageUnavailableError as exc:
            log.warning("delivery log unavailable (%s); %d deliveries kept in memory for now",
                        exc, len(items))  # fmt: skip
            with self._backlog_lock:
                self._backlog.extend(items)
            added = len(items)
        if added:
            self._wake.set()

    def _flush_backlog(self) -> None:
        with self._backlog_lock:
            items, self._backlog = self._backlog, []
        if not items:
            return
        try:
            self._log.enqueue(items, time.time_ns())
        except StorageUnavailableError:
            with self._backlog_lock:
                self._backlog[:0] = items
            raise

    # -- delivery -----------------------------------------------------------------------
    def deliver_pending(self, now: datetime | str | None = None) -> DeliveryCounts:
        """Attempt every delivery due at ``now`` (default: the current time) once, up to
        ``settings.concurrency`` at a time, and return what happened. Email deliveries
        wait (``skipped``, still pending) while no SMTP host is configured.

        Example: ``notifier.deliver_pending().delivered``.
        """
        self._flush_backlog()
        started = time.time_ns()
        at = started if now is None else to_ns(parse_timestamp("now", now))
        s = self.settings
        lease = int((60 + 10 * max(s.smtp_timeout, s.webhook_timeout)) * _NS)
        counts: Counter[str] = Counter()
        channels = self._channels()
        if Channel.EMAIL not in channels:
            counts["skipped"] = waiting = self._log.count_due(at, Channel.EMAIL)
            if waiting and waiting != self._warned_waiting:  # once per change, not per pass
                log.warning("%d email deliveries wait: email is not configured (set"
                            " TSMETER_SMTP_HOST)", waiting)  # fmt: skip
            self._warned_waiting = waiting
        while not self._stop.is_set():
            batch = self._log.claim_due(at, time.time_ns(), lease, s.concurrency * 4, channels)
            if not batch:
                break
            if len(batch) == 1:
                counts[self._attempt_safely(batch[0], at, started)] += 1
                continue
            with ThreadPoolExecutor(min(s.concurrency, len(batch)), "tsmeter-send") as pool:
                counts.update(pool.map(lambda c: self._attempt_safely(c, at, started), batch))
        return DeliveryCounts(**counts)

    def _channels(self) -> list[Channel]:
        """The channels this notifier can send on (email only with an SMTP host)."""
        if self.settings.email_enabled:
            return [Channel.EMAIL, Channel.WEBHOOK]
        return [Channel.WEBHOOK]

    def _send(self, job: Claimed) -> None:
        if job.channel is Channel.EMAIL:
            doc = json.loads(job.payload)
            headers = {
                "Message-ID": f"<{job.id}@tsmeter.invalid>",
                "Auto-Submitted": "auto-generated",
                "X-Tsmeter-Event": job.event,
                "X-Tsmeter-Delivery": job.id,
            }
            message = build_email(self.settings, job.target, doc["subject"], doc["body"], headers)
            send_email(self.settings, message, job.target)
        else:
            post_webhook(self.settings, job.target, job.payload, job.event, job.id)

    def _attempt_safely(self, job: Claimed, at: int, started: int) -> str:
        """:meth:`_attempt`, and if even recording its outcome fails, a log line: the claim
        then runs out and the delivery is attempted again. The pass goes on either way."""
        try:
            return self._attempt(job, at, started)
        except Exception:
            log.exception("delivery %s: its outcome could not be recorded; it is attempted"
                          " again when its claim runs out", job.id)  # fmt: skip
            return "deferred"

    def _attempt(self, job: Claimed, at: int, started: int) -> str:
        """One attempt at ``job``; its outcome goes to the log. Returns the counts key. Any
        exception while sending is this delivery's failure, never the pass's."""
        attempt = job.attempts + 1
        where = f"{job.channel.value} to {_shown(job.channel, job.target)}"
        try:
            self._send(job)
        except Exception as exc:
            if isinstance(exc, DeliveryError):
                error = exc
            else:
                log.exception("delivery %s (%s) raised unexpectedly", job.id, where)
                problem = f"unexpected {type(exc).__name__}: {one_line(str(exc))}"
                error = DeliveryError(problem, retryable=True)
            clock = time.time_ns()
            if error.retryable and attempt <= self.settings.retries:
                delay = self._backoff(attempt, error.retry_after)
                due = at + max(0, clock - started) + int(delay * _NS)
                log.warning("delivery %s (%s, %s) attempt %d failed: %s; next in %.1f s",
                            job.id, where, job.event, attempt, error, delay)  # fmt: skip
                self._log.finish(job.id, DeliveryStatus.PENDING, clock, error=str(error),
                                 next_attempt_at=due)  # fmt: skip
                return "deferred"
            log.error("delivery %s (%s, %s) failed after %d attempt(s): %s",
                      job.id, where, job.event, attempt, error)  # fmt: skip
            self._log.finish(job.id, DeliveryStatus.FAILED, clock, error=str(error))
            return "failed"
        log.info("delivered %s (%s, %s) on attempt %d", job.id, where, job.event, attempt)
        self._log.finish(job.id, DeliveryStatus.DELIVERED, time.time_ns())
        return "delivered"

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before attempt ``attempt + 1``: exponential, capped, with jitter."""
        s = self.settings
        delay = min(s.backoff_max, s.backoff_base * 2.0 ** min(attempt - 1, 60))
        delay *= random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, s.backoff_max))
        return delay

    def _run(self) -> None:
        """The worker: deliver what is due, then sleep until the next is due (or woken)."""
        try:
            self._loop()
        finally:
            with self._handoff:
                self._worker_done = True
                if self._abandoned and self._owns_log:
                    self._log.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            pause = self.settings.poll_interval
            try:
                self.deliver_pending()
                due = self._log.next_due(self._channels())
                if due is not None:
                    pause = min(pause, (due - time.time_ns()) / _NS)
            except Exception:
                log.exception("notification worker pass failed")
                pause = min(pause, 5.0)
            self._wake.wait(max(pause, 0.02))

    # -- the log ------------------------------------------------------------------------
    def deliveries(
        self, status: DeliveryStatus | str | None = None, limit: int | None = None
    ) -> list[Delivery]:
        """The delivery log, oldest first; only ``pending``, ``delivered`` or ``failed``
        ones if ``status`` is given. Example: ``notifier.deliveries("failed")``."""
        return self._log.entries(status, limit)

    def retry_failed(self, ids: Sequence[str] | None = None) -> int:
        """Make failed deliveries (all, or those in ``ids``) pending again, due now, with
        a fresh attempt budget; returns how many. Example: ``notifier.retry_failed()``."""
        count = self._log.requeue_failed(time.time_ns(), ids)
        if count:
            self._wake.set()
        return count

    def close(self, timeout: float = 5.0) -> bool:
        """Detach from every bus, stop the worker (waiting at most ``timeout`` seconds) and
        close the log (one it opened, not a queue it was given). Returns False if an attempt
        was still running when the wait ended; its delivery stays claimed and is retried
        after the claim expires."""
        for unsubscribe in self._detach:
            unsubscribe()
        self._detach.clear()
        self._stop.set()
        self._wake.set()
        stopped = True
        if self._thread is not None:
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
        try:
            self._flush_backlog()
        except StorageUnavailableError as exc:
            log.error("%d deliveries could not be logged and are lost: %s",
                      len(self._backlog), exc)  # fmt: skip
        with self._handoff:
            if self._thread is None or self._worker_done:
                if self._owns_log:
                    self._log.close()
            else:
                self._abandoned = True
                log.warning("notification worker still busy after %.1f s; it closes the log"
                            " when its attempt ends", timeout)  # fmt: skip
        return stopped
