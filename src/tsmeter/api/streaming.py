"""A streamed export: ``Meter.export_usage`` writes in a thread of its own into a bounded
queue, and the response reads the queue, so memory stays constant however many records there
are. An error before the first chunk (an unknown metric, a bad time) is raised to the route,
which answers it as problem+json; a client that goes away stops the writer."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import IO

__all__ = ["ExportStream"]

_CHUNK = 64 * 1024
_DONE = object()


class _Gone(Exception):
    """The reader went away: the writer stops."""


class _QueueWriter:
    """A text file whose writes go, in chunks of about ``_CHUNK`` characters, to a queue."""

    def __init__(self, out: queue.Queue[object], stop: threading.Event) -> None:
        self._out = out
        self._stop = stop
        self._parts: list[str] = []
        self._size = 0

    def write(self, text: str) -> int:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= _CHUNK:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self._parts:
            chunk = "".join(self._parts).encode()
            self._parts.clear()
            self._size = 0
            self._put(chunk)

    def _put(self, item: object) -> None:
        while True:
            if self._stop.is_set():
                raise _Gone
            try:
                self._out.put(item, timeout=0.5)
                return
            except queue.Full:
                continue


class ExportStream:
    """Runs ``export(out)`` in a thread; :meth:`first` waits for its first chunk (raising
    what the export raised before writing anything), then iterating yields the rest."""

    def __init__(self, export: Callable[[IO[str]], object], depth: int = 8) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._writer = _QueueWriter(self._queue, self._stop)
        self._thread = threading.Thread(
            target=self._run, args=(export,), daemon=True, name="tsmeter-api-export"
        )
        self._thread.start()

    def _run(self, export: Callable[[IO[str]], object]) -> None:
        try:
            export(self._writer)  # type: ignore[arg-type]
            self._writer.flush()
            self._writer._put(_DONE)
        except _Gone:
            return
        except BaseException as exc:
            try:
                self._writer._put(exc)
            except _Gone:
                return

    def _next(self) -> object:
        return self._queue.get()

    def first(self) -> bytes | None:
        """The first chunk; None when the export wrote nothing; raises the export's error."""
        item = self._next()
        if isinstance(item, BaseException):
            raise item
        return None if item is _DONE else item  # type: ignore[return-value]

    def rest(self, first: bytes | None) -> Iterator[bytes]:
        """``first`` and every chunk after it. An error after the first chunk ends the
        stream early (the status line is sent already), so the client sees a short body."""
        try:
            if first is None:
                return
            yield first
            while True:
                item = self._next()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            self._stop.set()
