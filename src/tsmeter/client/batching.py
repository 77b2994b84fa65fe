"""Batching records in the background, for the sync and the async client.

A batcher takes records one at a time (``add`` returns at once, with the record's id) and
sends them with ``record_batch`` when ``max_records`` are waiting or the oldest has waited
``max_delay`` seconds; closing it sends what is left. Ids and times are fixed when a record
is added, so a batch sent again after a failure counts once.

What a send can end in, and what the batcher does:

* accepted: the records are done;
* a record the server refuses (``records[3].quantity``): that record is set aside in
  ``rejected`` and given to ``on_error``, the others are sent again;
* the whole batch refused for good (quota with ``enforce``, a key refused with 401 or 403):
  every record of it goes to ``rejected`` and ``on_error``;
* the server unreachable, busy or failing (503, 429, another 5xx) after the client's own
  retries, or a fault in this process: the records stay pending and are sent again a moment
  later (their ids make that safe); :meth:`Batcher.close` raises
  StorageUnavailableError if some are still pending at its timeout (they stay in
  ``pending``), so nothing is dropped without a word. A sync batcher still open when the
  interpreter exits is closed then (an async one closes with its ``async with`` block, or
  :meth:`AsyncBatcher.aclose`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tsmeter.client._protocol import ApiError, Quantity, TimeLike, record_body
from tsmeter.errors import (
    OutboxFullError,
    StorageUnavailableError,
    TsmeterError,
    ValidationError,
)

if TYPE_CHECKING:
    from tsmeter.client.aio import AsyncClient
    from tsmeter.client.sync import Client

__all__ = ["AsyncBatcher", "Batcher", "Rejected"]

log = logging.getLogger("tsmeter.client")

_INDEX = re.compile(r"^records\[(\d+)\]")
#: pause before a batch the server could not take is sent again (the client has already
#: retried it with backoff)
_RESEND_PAUSE = 0.5


@dataclass(frozen=True)
class Rejected:
    """Records the server refused for good, and why."""

    error: TsmeterError
    records: list[dict[str, Any]]


def _log_rejected(rejected: Rejected) -> None:
    log.error("tsmeter refused %d record(s): %s", len(rejected.records), rejected.error)


@dataclass
class _State:
    """Pending records and the rules both batchers follow; not thread-safe by itself."""

    max_records: int
    max_delay: float
    max_pending: int
    on_error: Callable[[Rejected], object]
    pending: list[dict[str, Any]] = field(default_factory=list)
    #: when each pending record was added (monotonic), in the same order
    added: list[float] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    sent: int = 0
    #: a flush asked for everything pending to go now
    urgent: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.max_records <= 10_000:
            raise ValidationError("max_records", "must be between 1 and 10000")
        if self.max_delay <= 0:
            raise ValidationError("max_delay", "must be greater than zero")

    def add(self, body: dict[str, Any]) -> None:
        if len(self.pending) >= self.max_pending:
            raise OutboxFullError(
                f"{len(self.pending)} records are waiting to be sent (max_pending): not added"
            )
        self.pending.append(body)
        self.added.append(time.monotonic())

    def due(self, now: float) -> float | None:
        """Seconds until the next batch should go (0: now), None when nothing is pending."""
        if not self.pending:
            return None
        if self.urgent or len(self.pending) >= self.max_records:
            return 0.0
        return max(0.0, self.added[0] + self.max_delay - now)

    def take(self) -> list[dict[str, Any]]:
        return self.pending[: self.max_records]

    def settle(self, batch: list[dict[str, Any]], error: Exception | None) -> bool:
        """Apply a send's outcome to ``batch`` (the head of pending); whether to pause before
        sending again."""
        if error is None:
            self._drop(slice(0, len(batch)))
            self.sent += len(batch)
            return False
        if isinstance(error, StorageUnavailableError | OutboxFullError) or (
            isinstance(error, ApiError) and error.status >= 500
        ):
            return True
        if not isinstance(error, TsmeterError):  # a fault of this process: keep the records
            log.error("tsmeter batcher: sending failed, will send again", exc_info=error)
            return True
        index = _INDEX.match(error.field) if isinstance(error, ValidationError) else None
        if index and int(index.group(1)) < len(batch):
            at = int(index.group(1))
            bad = [batch[at]]
            self._drop(slice(at, at + 1))
        else:
            bad = batch
            self._drop(slice(0, len(batch)))
        refused = Rejected(error, bad)
        self.rejected.append(refused)
        try:
            self.on_error(refused)
        except Exception:  # a failing handler must not stop the batcher
            log.exception("tsmeter batcher: on_error failed")
        return False

    def _drop(self, part: slice) -> None:
        """Take ``part`` of the pending records (at the head: the batch just sent) away."""
        del self.pending[part]
        del self.added[part]
        if not self.pending:
            self.urgent = False


def _settings(
    max_records: int,
    max_delay: float,
    max_pending: int,
    on_error: Callable[[Rejected], object] | None,
) -> _State:
    return _State(max_records, max_delay, max_pending, on_error or _log_rejected)


class Batcher:
    """Sends records in batches from a background thread; see the module docstring.

    Example::

        with client.batcher(max_records=1000, max_delay=0.2) as batcher:
            batcher.add("api_calls", "org", "org-1")
    """

    def __init__(
        self,
        client: Client,
        *,
        max_records: int = 1000,
        max_delay: float = 0.2,
        max_pending: int = 100_000,
        enforce: bool = False,
        on_error: Callable[[Rejected], object] | None = None,
    ) -> None:
        self._client = client
        self._enforce = enforce
        self._state = _settings(max_records, max_delay, max_pending, on_error)
        self._lock = threading.Condition()
        self._busy = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="tsmeter-batcher", daemon=True)
        self._thread.start()
        _OPEN.add(self)

    @property
    def pending(self) -> list[dict[str, Any]]:
        """Records not sent yet (a copy)."""
        with self._lock:
            return list(self._state.pending)

    @property
    def rejected(self) -> list[Rejected]:
        """Records the server refused for good, with the reason."""
        with self._lock:
            return list(self._state.rejected)

    @property
    def sent(self) -> int:
        """How many records the server has accepted."""
        with self._lock:
            return self._state.sent

    def add(
        self,
        metric_key: str,
        subject_type: str,
        subject_id: str,
        quantity: Quantity | None = None,
        *,
        timestamp: TimeLike | None = None,
        id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
        org_id: str | None = None,
    ) -> str:
        """Queue one record (the arguments of ``Meter.record``); return its id at once.

        OutboxFullError when ``max_pending`` records are waiting already."""
        body = record_body(
            metric_key,
            subject_type,
            subject_id,
            quantity,
            timestamp=timestamp,
            id=id,
            metadata=metadata,
            source=source,
            org_id=org_id,
        )
        with self._lock:
            if self._closing:
                raise ValidationError("batcher", "is closed")
            self._state.add(body)
            if len(self._state.pending) >= self._state.max_records:
                self._lock.notify_all()
        return str(body["id"])

    def flush(self, timeout: float = 30.0) -> bool:
        """Send everything added so far; whether it was sent (or refused) within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._state.urgent = bool(self._state.pending)
            self._lock.notify_all()
            while self._state.pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._lock.wait(min(left, 0.05))
            return True

    def close(self, timeout: float = 30.0) -> None:
        """Send what is left and stop; StorageUnavailableError if records are still pending
        after ``timeout`` (they stay in :attr:`pending`)."""
        _OPEN.discard(self)
        done = self.flush(timeout)
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._thread.join(timeout=max(1.0, timeout))
        if not done:
            left = len(self.pending)
            raise StorageUnavailableError(f"{left} records could not be sent within {timeout}s")

    def __enter__(self) -> Batcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    wait = self._state.due(time.monotonic())
                    if wait == 0.0:
                        break
                    if wait is None and self._closing:
                        return
                    self._lock.wait(wait if wait is not None else 1.0)
                if self._closing and not self._state.pending:
                    return
                batch = self._state.take()
                self._busy = True
            error: Exception | None = None
            try:
                self._client.record_batch(batch, enforce=self._enforce)
            except Exception as exc:  # every failure is settled: the thread must not die
                error = exc
            with self._lock:
                self._busy = False
                pause = self._state.settle(batch, error)
                self._lock.notify_all()
                if pause and not self._closing:
                    self._lock.wait(_RESEND_PAUSE)
                elif pause:
                    return


#: sync batchers not closed yet: the interpreter closes them as it exits (their thread is a
#: daemon, which would otherwise stop with records still pending)
_OPEN: weakref.WeakSet[Batcher] = weakref.WeakSet()


@atexit.register
def _close_open_batchers() -> None:
    for batcher in list(_OPEN):
        try:
            batcher.close(timeout=10.0)
        except TsmeterError as exc:
            log.error("tsmeter batcher at exit: %s", exc)


class AsyncBatcher:
    """Sends records in batches from a task on the running event loop; ``add`` never waits,
    so a request handler that records does not wait for tsmeter. See the module docstring.

    Example::

        async with client.batcher(max_records=1000, max_delay=0.2) as batcher:
            batcher.add("api_calls", "org", "org-1")
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        max_records: int = 1000,
        max_delay: float = 0.2,
        max_pending: int = 100_000,
        enforce: bool = False,
        on_error: Callable[[Rejected], object] | None = None,
    ) -> None:
        self._client = client
        self._enforce = enforce
        self._state = _settings(max_records, max_delay, max_pending, on_error)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> list[dict[str, Any]]:
        """Records not sent yet (a copy)."""
        return list(self._state.pending)

    @property
    def rejected(self) -> list[Rejected]:
        """Records the server refused for good, with the reason."""
        return list(self._state.rejected)

    @property
    def sent(self) -> int:
        """How many records the server has accepted."""
        return self._state.sent

    def start(self) -> AsyncBatcher:
        """Start the sending task on the running loop (``async with`` does it); return self."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def add(
        self,
        metric_key: str,
        subject_type: str,
        subject_id: str,
        quantity: Quantity | None = None,
        *,
        timestamp: TimeLike | None = None,
        id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
        org_id: str | None = None,
    ) -> str:
        """Queue one record (the arguments of ``Meter.record``); return its id at once.

        OutboxFullError when ``max_pending`` records are waiting already."""
        if self._closing:
            raise ValidationError("batcher", "is closed")
        body = record_body(
            metric_key,
            subject_type,
            subject_id,
            quantity,
            timestamp=timestamp,
            id=id,
            metadata=metadata,
            source=source,
            org_id=org_id,
        )
        self._state.add(body)
        self._idle.clear()
        self.start()._wake.set()
        return str(body["id"])

    async def flush(self, timeout: float = 30.0) -> bool:
        """Send everything added so far; whether it was sent (or refused) within ``timeout``."""
        self._state.urgent = bool(self._state.pending)
        self._wake.set()
        if self._state.pending:
            self.start()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float = 30.0) -> None:
        """Send what is left and stop; StorageUnavailableError if records are still pending
        after ``timeout`` (they stay in :attr:`pending`)."""
        done = await self.flush(timeout)
        self._closing = True
        self._wake.set()
        if self._task is not None:
            if not done:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if not done:
            left = len(self._state.pending)
            raise StorageUnavailableError(f"{left} records could not be sent within {timeout}s")

    async def __aenter__(self) -> AsyncBatcher:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:  # the loop is ending without aclose: say what is lost
            if self._state.pending:
                log.error(
                    "tsmeter batcher cancelled with %d records not sent (close it with"
                    " 'async with' or aclose())",
                    len(self._state.pending),
                )
            raise

    async def _loop(self) -> None:
        while True:
            wait = self._state.due(time.monotonic())
            if wait is None:
                self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            batch = self._state.take()
            error: Exception | None = None
            try:
                await self._client.record_batch(batch, enforce=self._enforce)
            except Exception as exc:  # every failure is settled: the task must not die
                error = exc
            if self._state.settle(batch, error):
                await asyncio.sleep(_RESEND_PAUSE)
