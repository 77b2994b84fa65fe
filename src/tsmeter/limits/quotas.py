"""The in-memory quota view behind ``Meter.check`` and ``record(enforce=True)``.

:class:`QuotaView` keeps the totals of BLOCK thresholds in memory: read from
the store on first use and every ``refresh_seconds``, and advanced by the
records this process stores in between. Within one process, a check and the
reservation of what it allowed happen under one lock, so concurrent threads
never pass a limit together; records in flight from other processes (or when a
refresh lands between a reservation and its write) can pass it by at most what
was in flight. With ``unstored`` (a Meter with an outbox), the records this
process counted but the store does not hold yet are kept, and a refresh adds
them to what it reads, so a backlog in the outbox (the store slow or down) does
not reopen a limit; a record the store took just before the refresh read it
counts twice until the next refresh (a refusal too early, never a pass). Windows
and their totals are :mod:`tsmeter.limits.windows`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from tsmeter.domain import (
    AggregationType,
    MetricDefinition,
    PeriodType,
    RecordRow,
    ThresholdAction,
    UsageThreshold,
)
from tsmeter.domain.periods import Calendar
from tsmeter.domain.quantities import parse_decimal
from tsmeter.domain.validation import from_ns
from tsmeter.limits.windows import (
    LIFETIME_END,
    Totals,
    threshold_period,
    window,
    window_totals,
)
from tsmeter.ports import Catalog, UsageStore

__all__ = ["QuotaDecision", "QuotaView"]


class QuotaDecision(NamedTuple):
    """Whether recording more is allowed, and against which limit.

    Without a BLOCK threshold for the subject, ``allowed`` is True and the rest is None.
    """

    allowed: bool
    limit: Decimal | None = None
    used: Decimal | None = None
    remaining: Decimal | None = None
    window_end: datetime | None = None
    threshold_id: str | None = None


UNLIMITED = QuotaDecision(True)


class _Window:
    """The totals of one (BLOCK threshold, subject) in its current window."""

    __slots__ = ("end", "end_dt", "fresh_until", "start", "totals")

    def __init__(self, totals: Totals, start: int, end: int, fresh_until: int) -> None:
        self.totals = totals
        self.start = start
        self.end = end
        self.end_dt = from_ns(end) if end < LIFETIME_END else None
        self.fresh_until = fresh_until


_Rule = tuple[UsageThreshold, MetricDefinition, PeriodType | None]
_RuleKey = tuple[str, str | None, str, str]  # metric key, metric org, subject type, subject id


class QuotaView:
    """BLOCK-threshold usage kept in memory for fast checks (see the module docstring)."""

    def __init__(
        self,
        store: UsageStore,
        catalog: Catalog,
        calendar: Calendar,
        resolve_metric: Callable[[str, str | None], MetricDefinition],
        *,
        refresh_seconds: float = 5.0,
        unstored: bool = False,
    ) -> None:
        self.lock = threading.RLock()
        # counted rows the store may not hold yet, by subject key, then id (see the module)
        self._unstored: dict[_RuleKey, dict[str, RecordRow]] | None = {} if unstored else None
        self._store = store
        self._catalog = catalog
        self._calendar = calendar
        self._resolve = resolve_metric
        self._refresh_ns = int(refresh_seconds * 1e9)
        self._blocking: dict[tuple[str, str | None], list[_Rule]] | None = None
        self._blocking_until = 0
        self._rules: dict[_RuleKey, list[_Rule]] = {}
        self._windows: dict[tuple[str, str], _Window] = {}

    def invalidate(self) -> None:
        """Forget thresholds and totals (after a threshold changed in this process)."""
        with self.lock:
            self._blocking = None
            self._rules.clear()
            self._windows.clear()

    # -- rules ------------------------------------------------------------------------
    def _rules_for(self, key: _RuleKey, now: int) -> list[_Rule]:
        if self._blocking is None or now >= self._blocking_until:
            self._load_blocking(now)
        return self._matching(key)

    def _matching(self, key: _RuleKey) -> list[_Rule]:
        """The BLOCK rules of a subject among the thresholds loaded (cached)."""
        found = self._rules.get(key)
        if found is None:
            candidates = (self._blocking or {}).get((key[0], key[1]), [])
            found = [
                r for r in candidates
                if r[0].subject_type == key[2] and r[0].subject_id in (key[3], "*")
            ]  # fmt: skip
            if len(self._rules) > 100_000:
                self._rules.clear()
            self._rules[key] = found
        return found

    def _load_blocking(self, now: int) -> None:
        blocking: dict[tuple[str, str | None], list[_Rule]] = {}
        for t in self._catalog.list_thresholds():
            if t.action is not ThresholdAction.BLOCK:
                continue
            metric = self._catalog.find_metric(t.metric_key, t.org_id)
            if metric is None:
                continue
            rule = (t, metric, threshold_period(metric, t))
            blocking.setdefault((metric.key, metric.org_id), []).append(rule)
        self._blocking = blocking
        self._blocking_until = now + 6 * self._refresh_ns
        self._rules.clear()

    def _window(self, rule: _Rule, subject_type: str, subject_id: str, now: int) -> _Window:
        threshold, metric, period = rule
        found = self._windows.get((threshold.id, subject_id))
        if found is not None and now < found.fresh_until and found.start <= now < found.end:
            return found
        start, end = window(self._calendar, period, now)
        totals = window_totals(self._store, self._calendar, metric, period, (start, end),
                               subject_type, subject_id).get(subject_id, Totals())  # fmt: skip
        if self._unstored:
            held = self._unstored.get((metric.key, metric.org_id, subject_type, subject_id), {})
            for row in held.values():
                if start <= row.ts < end:
                    totals.add(row.quantity, row.ts)
        fresh = _Window(totals, start, end, now + self._refresh_ns)
        self._windows[(threshold.id, subject_id)] = fresh
        return fresh

    # -- decisions --------------------------------------------------------------------
    def check(
        self,
        metric_key: str,
        subject_type: str,
        subject_id: str,
        quantity: int | float | str | Decimal = 1,
        *,
        org_id: str | None = None,
    ) -> QuotaDecision:
        """Whether recording ``quantity`` more of a metric (for a COUNT metric: that many
        records) stays within the subject's BLOCK thresholds; the metric is resolved as a
        record's is (the org's own, else the global one).

        Example: ``view.check("api_calls", "org", "acme").allowed``.
        """
        metric = self._resolve(metric_key, org_id)
        units = metric.units("quantity", quantity)
        if metric.aggregation_type is AggregationType.COUNT:
            records = max(1, int(parse_decimal("quantity", quantity)))
            units = records * 10**metric.precision
        else:
            records = 1
        return self.decide(metric, subject_type, subject_id, units, records=records)

    def decide(
        self,
        metric: MetricDefinition,
        subject_type: str,
        subject_id: str,
        units: int,
        *,
        records: int = 1,
        at: int | None = None,
    ) -> QuotaDecision:
        """May ``records`` more records of ``metric`` adding up to ``units`` (at ``at``,
        default now) be recorded? The most restrictive BLOCK threshold decides."""
        now = time.time_ns()
        with self.lock:
            rules = self._rules.get((metric.key, metric.org_id, subject_type, subject_id))
            if rules is None or now >= self._blocking_until:
                rules = self._rules_for((metric.key, metric.org_id, subject_type, subject_id), now)
            if not rules:
                return UNLIMITED
            best: QuotaDecision | None = None
            for rule in rules:
                w = self._windows.get((rule[0].id, subject_id))
                if w is None or now >= w.fresh_until or now >= w.end:
                    w = self._window(rule, subject_type, subject_id, now)
                if at is not None and not w.start <= at < w.end:
                    continue  # a record for another window does not count against this one
                threshold, limit = rule[0], rule[0].threshold
                aggregation = metric.aggregation_type
                used = metric.usage(w.totals.value(aggregation))
                after = w.totals.projected(aggregation, records, units)
                allowed = metric.usage(after) <= limit
                remaining = limit - used if used < limit else _ZERO
                tighter = (
                    best is not None
                    and best.allowed == allowed
                    and remaining < (best.remaining or _ZERO)
                )
                if best is None or (best.allowed and not allowed) or tighter:
                    best = QuotaDecision(allowed, limit, used, remaining, w.end_dt, threshold.id)
            return best or UNLIMITED

    def reserve(self, rows: Sequence[RecordRow]) -> tuple[int, QuotaDecision] | None:
        """Under the lock: check ``rows`` one by one against the BLOCK thresholds, counting
        each; return the index and decision of the first refused (nothing stays counted
        then), else None."""
        with self.lock:
            for index, row in enumerate(rows):
                metric = self._resolve(row.metric_key, row.org_id)
                decision = self.decide(metric, row.subject_type, row.subject_id, row.quantity,
                                       at=row.ts)  # fmt: skip
                if not decision.allowed:
                    self.forget(rows[:index])
                    return index, decision
                self.add([row])
            return None

    def add(self, rows: Iterable[RecordRow]) -> None:
        """Count rows this process stored or queued (in windows already read; others read
        them), keeping queued ones of a BLOCK threshold's subject until they are stored."""
        if self._unstored is not None:
            self._hold(rows)
        if not self._windows:
            return
        with self.lock:
            for row in rows:
                for threshold, _, _ in self._rules.get(
                    (row.metric_key, row.org_id, row.subject_type, row.subject_id), ()
                ):
                    w = self._windows.get((threshold.id, row.subject_id))
                    if w is not None and w.start <= row.ts < w.end:
                        w.totals.add(row.quantity, row.ts)

    def _hold(self, rows: Iterable[RecordRow]) -> None:
        """Keep the rows that count against a BLOCK threshold until the store has them.

        On the recording path: the thresholds known from the last check are used as they
        are (never read from the catalog here), and a metric without a BLOCK threshold
        costs one lookup. Before this process first checks a quota nothing is held."""
        blocking = self._blocking
        if not blocking:
            return
        held = self._unstored
        assert held is not None
        with self.lock:
            for row in rows:
                if (row.metric_key, row.org_id) not in blocking:
                    continue
                key = (row.metric_key, row.org_id, row.subject_type, row.subject_id)
                if self._matching(key):
                    held.setdefault(key, {})[row.id] = row

    def stored(self, rows: Sequence[RecordRow]) -> None:
        """The store holds ``rows`` now (the outbox delivered them): a refresh reads them
        there (a record sink of the Meter)."""
        if not self._unstored:
            return
        with self.lock:
            for row in rows:
                key = (row.metric_key, row.org_id, row.subject_type, row.subject_id)
                held = self._unstored.get(key)
                if held is not None and held.pop(row.id, None) is not None and not held:
                    del self._unstored[key]

    def forget(self, rows: Iterable[RecordRow]) -> None:
        """Drop the windows ``rows`` count in (read again from the store on next use)."""
        rows = list(rows)
        if self._unstored:
            self.stored(rows)  # a reservation taken back: the rows will not be stored
        with self.lock:
            for row in rows:
                for threshold, _, _ in self._rules.get(
                    (row.metric_key, row.org_id, row.subject_type, row.subject_id), ()
                ):
                    self._windows.pop((threshold.id, row.subject_id), None)


_ZERO = Decimal(0)
