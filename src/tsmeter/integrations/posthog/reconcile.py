"""Reconciliation: the primary store's totals against PostHog's, per subject and UTC period.

Both sides are read over the same whole UTC periods (``[start, end)`` widened to period
boundaries): the primary store through the Meter (its summaries when it computes periods in
UTC, else its raw records bucketed in UTC), PostHog through the
:class:`~tsmeter.integrations.posthog.reader.PostHogReader` (events de-duplicated by uuid). Totals
are
under the metric's aggregation type. A subject-period is a :class:`Difference` when

* the record counts differ: ``missing in PostHog`` (PostHog has fewer, or none) or
  ``extra in PostHog`` (more, or a period the store does not have), or
* the totals differ beyond the tolerance although the counts agree: ``value drift``.

The tolerance bounds ``|posthog - primary|`` per subject-period, absolute (``0.5``) or
relative to the primary total (``1%``); differences of float rounding alone (a relative
1e-9) are never reported. A difference whose totals stay within the tolerance is still
listed (``beyond_tolerance`` False) but does not make :attr:`Reconciliation.ok` false.

Example::

    result = reconcile(meter, reader, "api_calls", "DAILY", start=jan, end=feb)
    for d in result.differences:
        print(d.subject_id, d.period_start, d.primary, d.posthog, d.kind)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from tsmeter.domain import AggregationType, PeriodType, UsageRecord
from tsmeter.domain.modelio import TimeLike, ns
from tsmeter.domain.modelio import period_type as parse_period
from tsmeter.domain.periods import Calendar
from tsmeter.domain.validation import from_ns, to_ns
from tsmeter.errors import ValidationError
from tsmeter.integrations.posthog.reader import PostHogReader, total_of

if TYPE_CHECKING:
    from tsmeter.metering.meter import Meter

__all__ = ["Difference", "DifferenceKind", "Reconciliation", "Tolerance", "reconcile"]

_UTC = Calendar("UTC")
_FLOAT_NOISE = 1e-9

Key = tuple[str, str, datetime]  # (subject_type, subject_id, period_start)


class DifferenceKind(StrEnum):
    """How the PostHog copy of one subject-period differs from the primary store's."""

    MISSING = "missing in PostHog"
    EXTRA = "extra in PostHog"
    DRIFT = "value drift"


@dataclass(frozen=True)
class Tolerance:
    """How far PostHog's total may be from the primary total: ``value`` units, or ``value``
    percent of the primary total when ``relative``.

    >>> Tolerance.parse("2%").allows(100.0, 101.5), Tolerance.parse("0.5").allows(3.0, 4.0)
    (True, False)
    """

    value: float = 0.0
    relative: bool = False

    @classmethod
    def parse(cls, text: str | float) -> Tolerance:
        """``0.5`` (absolute) or ``2%`` (relative to the primary total)."""
        raw = str(text).strip()
        relative = raw.endswith("%")
        try:
            value = float(raw.removesuffix("%"))
        except ValueError:
            value = -1.0
        if not value >= 0 or value == float("inf"):
            problem = f"must be a number >= 0 or a percentage, got {text!r}"
            raise ValidationError("tolerance", problem)
        return cls(value, relative)

    def allows(self, primary: float, posthog: float) -> bool:
        """Whether ``posthog`` is close enough to ``primary``."""
        gap = abs(posthog - primary)
        if gap <= _FLOAT_NOISE * max(abs(primary), abs(posthog)):
            return True
        return gap <= (self.value * abs(primary) / 100 if self.relative else self.value)

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.relative else f"{self.value:g}"


@dataclass(frozen=True)
class Difference:
    """One subject-period where the copies differ; ``difference`` is ``posthog - primary``."""

    subject_type: str
    subject_id: str
    period_start: datetime
    period_end: datetime
    primary: float
    posthog: float
    difference: float
    primary_records: int
    posthog_records: int
    kind: DifferenceKind
    beyond_tolerance: bool


@dataclass(frozen=True)
class Reconciliation:
    """The outcome: what was compared and every difference found (subject, then period)."""

    metric_key: str
    period_type: PeriodType
    aggregation: AggregationType
    start: datetime
    end: datetime
    tolerance: Tolerance
    compared: int
    differences: list[Difference]

    @property
    def ok(self) -> bool:
        """No difference beyond the tolerance."""
        return not any(d.beyond_tolerance for d in self.differences)


def _components_from_records(
    records: Iterable[UsageRecord], period: PeriodType, aggregation: AggregationType
) -> dict[Key, tuple[float, int]]:
    """Totals and counts per subject and UTC period, from raw records."""
    parts: dict[Key, list[float]] = {}  # count, sum, min, max, last ts, last value
    last_ids: dict[Key, str] = {}
    for r in records:
        t = to_ns(r.timestamp)
        key = (r.subject_type, r.subject_id, from_ns(_UTC.start_of(period, t)))
        p = parts.get(key)
        q = r.quantity
        if p is None:
            parts[key] = [1, q, q, q, t, q]
            last_ids[key] = r.id
            continue
        p[0] += 1
        p[1] += q
        p[2], p[3] = min(p[2], q), max(p[3], q)
        if (t, r.id) > (p[4], last_ids[key]):
            p[4], p[5], last_ids[key] = t, q, r.id
    return {
        k: (total_of(aggregation, int(p[0]), p[1], p[2], p[3], p[5]), int(p[0]))
        for k, p in parts.items()
    }


def _primary(
    meter: Meter,
    metric_key: str,
    period: PeriodType,
    start: datetime,
    end: datetime,
    subject_type: str | None,
    subject_id: str | None,
    org_id: str | None,
    aggregation: AggregationType,
) -> dict[Key, tuple[float, int]]:
    if meter.calendar.timezone == "UTC":
        summaries = meter.get_usage_summaries(
            metric_key, period, start=start, end=end, subject_type=subject_type,
            subject_id=subject_id, org_id=org_id,
        )  # fmt: skip
        return {
            (s.subject_type, s.subject_id, s.period_start): (s.total_quantity, s.record_count)
            for s in summaries
            if s.record_count
        }
    records = meter.iter_usage(metric_key, subject_type, subject_id, start=start, end=end,
                               org_id=org_id)  # fmt: skip
    return _components_from_records(records, period, aggregation)


def reconcile(
    meter: Meter,
    reader: PostHogReader,
    metric_key: str,
    period_type: PeriodType | str = PeriodType.DAILY,
    *,
    start: TimeLike,
    end: TimeLike,
    subject_type: str | None = None,
    subject_id: str | None = None,
    org_id: str | None = None,
    tolerance: Tolerance | float | str = 0.0,
) -> Reconciliation:
    """Compare ``metric_key``'s totals per subject and UTC period in ``[start, end)`` (widened
    to whole periods) between ``meter``'s store and PostHog; see the module's docs.

    Example: ``reconcile(meter, reader, "api_calls", "DAILY", start=s, end=e).ok``.
    """
    period = parse_period(period_type)
    allowed = tolerance if isinstance(tolerance, Tolerance) else Tolerance.parse(tolerance)
    lo, hi = ns("start", start), ns("end", end)
    assert lo is not None and hi is not None
    if hi <= lo:
        raise ValidationError("end", "must be after start")
    edges = _UTC.boundaries(period, lo, hi)
    first, last = from_ns(edges[0]), from_ns(edges[-1])
    metric = meter.get_metric(metric_key, org_id)
    agg = metric.aggregation_type
    primary = _primary(meter, metric.key, period, first, last, subject_type, subject_id,
                       metric.org_id, agg)  # fmt: skip
    copies = reader.get_usage_summaries(
        metric.key, period, start=first, end=last, subject_type=subject_type,
        subject_id=subject_id, org_id=metric.org_id, aggregation=agg,
    )  # fmt: skip
    posthog = {
        (s.subject_type, s.subject_id, s.period_start): (s.total_quantity, s.record_count)
        for s in copies
    }
    differences = []
    keys = sorted(primary.keys() | posthog.keys())
    for key in keys:
        mine, theirs = primary.get(key, (0.0, 0)), posthog.get(key, (0.0, 0))
        within = allowed.allows(mine[0], theirs[0])
        if theirs[1] < mine[1]:
            kind = DifferenceKind.MISSING
        elif theirs[1] > mine[1]:
            kind = DifferenceKind.EXTRA
        elif not within:
            kind = DifferenceKind.DRIFT
        else:
            continue
        st, sid, begin = key
        differences.append(Difference(
            subject_type=st, subject_id=sid, period_start=begin,
            period_end=from_ns(_UTC.next_start(period, to_ns(begin))), primary=mine[0],
            posthog=theirs[0], difference=theirs[0] - mine[0], primary_records=mine[1],
            posthog_records=theirs[1], kind=kind, beyond_tolerance=not within,
        ))  # fmt: skip
    return Reconciliation(metric.key, period, agg, first, last, allowed, len(keys), differences)
