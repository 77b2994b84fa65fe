"""One recording as a unit of work: quota reservation, outbox or store, sinks, rollback.

``Meter.record`` and ``record_batch`` run their validated rows through a
:class:`RecordingUnit`: with ``enforce`` it reserves the rows against the BLOCK thresholds
first; the caller then queues or stores them and says how it went (:meth:`RecordingUnit.queued`
or :meth:`RecordingUnit.stored`), which counts them in the quota view and hands them to the
record sinks (the PostHog mirror). If anything fails before that, leaving the ``with`` block
rolls the reservation back, here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType

from tsmeter.domain import RecordRow
from tsmeter.limits.quotas import QuotaDecision, QuotaView

__all__ = ["RecordingUnit"]


class RecordingUnit:
    """The quota side of one ``record``/``record_batch`` call, as a context manager.

    Example::

        with RecordingUnit(quotas, rows, enforce=True, sinks=to_sinks) as unit:
            refused = unit.reserve()
            ...
            unit.stored(store.append(rows, now))
    """

    def __init__(
        self,
        quotas: QuotaView,
        rows: Sequence[RecordRow],
        *,
        enforce: bool,
        sinks: Callable[[Sequence[RecordRow]], None] | None = None,
    ) -> None:
        self._quotas = quotas
        self.rows = rows
        self.enforce = enforce
        self._sinks = sinks
        self._done = False

    def __enter__(self) -> RecordingUnit:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is not None and not self._done:
            self.rollback()

    def reserve(self) -> tuple[int, QuotaDecision] | None:
        """With ``enforce``: count the rows against the BLOCK thresholds; the index and
        decision of the first refused (nothing stays counted then), else None."""
        if not self.enforce:
            return None
        refused = self._quotas.reserve(self.rows)
        if refused is not None:
            self._done = True  # the view took the reservation back itself
        return refused

    def queued(self) -> None:
        """The rows are in the outbox: they count from now on (their sinks run on delivery)."""
        self._count(every_row_new=True)

    def stored(self, new: int, *, to_sinks: bool = True) -> None:
        """The store took the rows, ``new`` of them new: count them if all were new, else read
        the totals again (which ones were stored before is unknown); then the sinks, unless
        ``to_sinks`` is False (a single record found stored before)."""
        self._count(every_row_new=new == len(self.rows))
        if to_sinks and self._sinks is not None and self.rows:
            self._sinks(self.rows)

    def rollback(self) -> None:
        """Forget what the rows count in the quota view (read again from the store)."""
        self._done = True
        self._quotas.forget(self.rows)

    def _count(self, *, every_row_new: bool) -> None:
        self._done = True
        if not every_row_new:
            self._quotas.forget(self.rows)
        elif not self.enforce:  # reserved rows are counted already
            self._quotas.add(self.rows)
