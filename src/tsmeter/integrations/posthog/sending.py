"""The mirror's sending side: its buffer, the sender thread that feeds the posthog SDK, and
how each event is settled (mirrored, re-sent, failed) and written to the journal.

:class:`Sender` is the base of :class:`tsmeter.integrations.posthog.mirror.PostHogMirror`, which
adds
the public API; see that module for the whole picture.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
import uuid as uuidlib
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tsmeter.errors import TsmeterError
from tsmeter.integrations.posthog.builder import (
    EventBuilder,
    Source,
    SummaryRequest,
    describe_source,
)
from tsmeter.integrations.posthog.events import CaptureEvent
from tsmeter.integrations.posthog.journal import Journal, RunCounts, now_ns
from tsmeter.integrations.posthog.sdk import SdkClient, describe_error
from tsmeter.integrations.posthog.settings import PostHogSettings

if TYPE_CHECKING:
    from tsmeter.metering.meter import Meter

__all__ = ["Item", "Sender"]

log = logging.getLogger("tsmeter.posthog")

_PERSIST_EVERY = 1.0


@dataclass
class _Entry:
    """A built event, the failed attempts it has had, and whether its uuid is registered
    as pending (``queued``)."""

    event: CaptureEvent
    attempts: int = 0
    queued: bool = False


@dataclass(order=True)
class _Retry:
    due: float
    seq: int
    entry: _Entry = field(compare=False)


#: What the buffer holds: items to build events from, or built events.
Item = Source | _Entry


class Sender:
    """The buffer and the sender thread (see :mod:`tsmeter.integrations.posthog.mirror`)."""

    def _init_state(self, settings: PostHogSettings, meter: Meter | None) -> None:
        """The buffer, the counters and the sender's bookkeeping."""
        self.settings = settings
        self.run_id = str(uuidlib.uuid4())
        self._meter: Meter | None = None
        self._cond = threading.Condition(threading.Lock())
        self._ready: deque[Item] = deque()
        self._retries: list[_Retry] = []
        self._inflight: dict[str, _Entry] = {}
        self._building = 0
        self._queued: set[str] = set()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._seq = itertools.count()
        self._n = dict.fromkeys(
            ("mirrored", "retried", "failed", "dropped", "rejected", "duplicates"), 0
        )
        self._last_error: str | None = None
        self._last_error_at: int | None = None
        self._last_sent_at: int | None = None
        self._dropped_ranges: dict[tuple[str, str | None], tuple[int, int, int]] = {}
        self._to_journal: list[tuple[CaptureEvent, str, int, str | None]] = []
        self._builder = EventBuilder(settings, meter)
        self._detach: list[Callable[[], None]] = []
        self._expedite = False
        self._stopping = False
        self._closed = not settings.enabled
        self._last_cycle = 0.0
        self._last_persist = 0.0
        self._sdk: SdkClient | None = None
        self._journal: Journal | None = None
        self._thread: threading.Thread | None = None

    def _pending(self) -> int:
        return len(self._ready) + self._building + len(self._retries) + len(self._inflight)

    def _leftovers(self) -> list[tuple[CaptureEvent, str, int, str | None]]:
        """Every event still pending, as journal rows (locked; built where needed). They stay
        counted as pending: they were not sent."""
        entries = [r.entry for r in self._retries] + list(self._inflight.values())
        entries += self._build(list(self._ready), stopping=True)
        return [(e.event, "pending", e.attempts, self._last_error) for e in entries]

    # -- the sender thread ------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._wait_for_work():
                    return
            try:
                self._cycle()
            except Exception:  # never let the sender die
                log.exception("PostHog mirror: sending failed unexpectedly")
                time.sleep(self.settings.flush_interval)
            finally:
                with self._cond:
                    self._cond.notify_all()
            try:
                self._persist()
            except Exception:
                log.exception("PostHog mirror: writing the journal failed")

    def _wait_for_work(self) -> bool:
        """Wait (locked) until a cycle is due; False when stopping."""
        interval = self.settings.flush_interval
        while not self._stopping:
            now = time.monotonic()
            if self._expedite or len(self._ready) >= self.settings.batch_size:
                return True
            wake = self._last_cycle + interval
            if self._ready or self._inflight:
                if now >= wake:
                    return True
            elif self._retries:
                wake = max(wake, self._retries[0].due)
                if now >= wake:
                    return True
            else:
                wake = now + interval
            self._cond.wait(min(max(wake - now, 0.001), 1.0))
        return False

    def _cycle(self) -> None:
        """Take a batch, build it, hand it to the SDK, flush, and settle what came back."""
        assert self._sdk is not None
        with self._cond:
            self._last_cycle = now = time.monotonic()
            expedite, self._expedite = self._expedite, False
            room = self.settings.batch_size
            if self._inflight:  # the SDK still holds events: do not overfill its queue
                room = min(room, max(self.settings.queue_size - len(self._inflight), 0))
            taken: list[_Entry] = []
            while self._retries and len(taken) < room and (expedite or self._retries[0].due <= now):
                taken.append(heapq.heappop(self._retries).entry)
            items: list[Item] = []
            while self._ready and len(taken) + len(items) < room:
                items.append(self._ready.popleft())
            self._building = len(taken) + len(items)
        built: list[_Entry] = taken
        sent: list[_Entry] = []
        refused: list[_Entry] = []
        try:
            built = taken + self._build(items)
            for entry in built[: max(room, 0)]:
                (sent if self._sdk.capture(entry.event) else refused).append(entry)
        finally:
            with self._cond:
                self._building = 0
                self._inflight.update((e.event.uuid, e) for e in sent)
                self._ready.extendleft(reversed(built[len(sent) + len(refused) :]))
                for entry in refused:
                    self._n["rejected"] += 1
                    self._n["retried"] += 1
                    self._schedule(entry, time.monotonic() + self.settings.flush_interval)
                waiting = bool(self._inflight)
        if refused:
            log.warning("PostHog SDK queue full: %d events will be offered again", len(refused))
        drained = self._sdk.flush(self.settings.flush_interval) if waiting else True
        self._settle(self._sdk.take_errors(), drained)

    def _settle(self, errors: dict[str, str], drained: bool) -> None:
        """Failed events go back for a retry (or fail); with the SDK drained, every other
        event in flight was uploaded."""
        retried: list[str] = []
        given_up = 0
        with self._cond:
            now = now_ns()
            for uid, error in errors.items():
                entry = self._inflight.pop(uid, None)
                if entry is None:
                    continue
                self._last_error, self._last_error_at = error, now
                entry.attempts += 1
                if entry.attempts > self.settings.retries:
                    given_up += 1
                    self._n["failed"] += 1
                    self._queued.discard(uid)
                    self._to_journal.append((entry.event, "failed", entry.attempts, error))
                else:
                    retried.append(uid)
                    self._n["retried"] += 1
                    self._schedule(entry, time.monotonic() + self._backoff(entry.attempts))
            if drained and self._inflight:
                for uid in self._inflight:
                    self._n["mirrored"] += 1
                    self._queued.discard(uid)
                    self._remember(uid)
                self._inflight.clear()
                self._last_sent_at = now
        if retried:
            log.warning(
                "PostHog upload failed for %d events (%s); they will be re-sent",
                len(retried),
                self._last_error,
            )
        if given_up:
            log.error(
                "PostHog mirror gave up on %d events after %d retries (%s); they are"
                " kept in the journal (tsmeter posthog retry)",
                given_up,
                self.settings.retries,
                self._last_error,
            )

    def _schedule(self, entry: _Entry, due: float) -> None:
        heapq.heappush(self._retries, _Retry(due, next(self._seq), entry))

    def _backoff(self, attempt: int) -> float:
        delay = min(self.settings.backoff_base * 2.0 ** (attempt - 1), self.settings.backoff_max)
        return delay * (1 - random.random() / 2)

    def _remember(self, uid: str) -> None:
        self._recent[uid] = None
        if len(self._recent) > min(self.settings.buffer_size, 50_000):
            self._recent.popitem(last=False)

    # -- building events --------------------------------------------------------------
    def _build(self, items: Sequence[Item], *, stopping: bool = False) -> list[_Entry]:
        """Turn buffered items into entries, skipping uuids pending or just sent. Summary
        requests read the store, so not while ``stopping`` (the lock is held then)."""
        built: list[_Entry] = []
        broken = 0
        for item in items:
            if isinstance(item, _Entry):
                built.append(item)
                continue
            if stopping and isinstance(item, SummaryRequest):
                self._n["dropped"] += 1
                log.error(
                    "PostHog mirror stopped before sending %s; aggregate that range again"
                    " with a running mirror",
                    describe_source(item),
                )
                continue
            try:
                built += [_Entry(e) for e in self._builder.build(item)]
            except Exception as exc:
                if not broken:  # one line per call, not one per record
                    log.exception("PostHog mirror: cannot build the event for %s", what(item))
                broken += 1
                with _maybe(self._cond, not stopping):
                    self._n["failed"] += 1
                    self._last_error, self._last_error_at = describe_error(exc), now_ns()
        with _maybe(self._cond, not stopping):
            fresh = []
            for entry in built:
                uid = entry.event.uuid
                if entry.queued:
                    fresh.append(entry)
                elif uid in self._queued or uid in self._recent:
                    self._n["duplicates"] += 1
                else:
                    self._queued.add(uid)
                    entry.queued = True
                    fresh.append(entry)
        return fresh

    # -- the journal ------------------------------------------------------------------
    def _persist(
        self,
        *,
        force: bool = False,
        stopped: bool = False,
        extra: Sequence[tuple[CaptureEvent, str, int, str | None]] = (),
    ) -> None:
        """Write counters, dropped ranges and given-up events to the journal (throttled)."""
        if self._journal is None or (
            not force and time.monotonic() - self._last_persist < _PERSIST_EVERY
        ):
            return
        self._last_persist = time.monotonic()
        with self._cond:
            unsent, self._to_journal = [*self._to_journal, *extra], []
            ranges, self._dropped_ranges = self._dropped_ranges, {}
            counts = RunCounts(
                **{k: v for k, v in self._n.items() if k != "duplicates"},
                pending=self._pending(),
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                last_sent_at=self._last_sent_at,
            )
        now = now_ns()
        try:
            self._journal.save_unsent(unsent, now)
            self._journal.add_dropped(ranges, now)
            self._journal.update_run(self.run_id, counts, now, stopped=stopped)
        except TsmeterError:
            log.exception("PostHog mirror: cannot write the journal %s", self._journal.path)
            with self._cond:  # try again next time
                self._to_journal[:0] = unsent
                for key, value in ranges.items():
                    lo, hi, n = self._dropped_ranges.get(key, (*value[:2], 0))
                    self._dropped_ranges[key] = (min(lo, value[0]), max(hi, value[1]), n + value[2])


class _maybe:
    """``with _maybe(lock, flag)``: hold ``lock`` only when ``flag`` is true."""

    def __init__(self, lock: threading.Condition, take: bool) -> None:
        self._lock, self._take = lock, take

    def __enter__(self) -> None:
        if self._take:
            self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        if self._take:
            self._lock.release()


def what(item: Item) -> str:
    """A few words about a buffered item, for a log line."""
    return describe_source(item.event if isinstance(item, _Entry) else item)
