"""Reconciliation: the primary store's totals against PostHog's, per subject and UTC period.

Both sides are read over the same whole UTC periods (``[start, end)`` widened to period
boundaries): the primary store through the Meter (its summaries when it computes periods in
UTC, else its raw records bucketed in UTC), PostHog through the
:class:`~tsmeter.integrations.posthog.reader.PostHogReader` (events de-duplicated by uuid). Totals
are
under the metric's aggregation type, exact Decimals at the metric's precision on both sides
(PostHog sums the integer ``units`` of each event; see
:mod:`~tsmeter.integrations.posthog.reader`), so they are compared exactly: equal digits,
or a difference. A subject-period is a :class:`Difference` when

* the record counts differ: ``missing in PostHog`` (PostHog has fewer, or none) or
  ``extra in PostHog`` (more, or a period the store does not have), or
* the totals differ although the counts agree: ``value drift``.

There is no tolerance unless one is asked for: an explicit bound on ``|posthog - primary|``
per subject-period, absolute (``0.5``) or relative to the primary total (``1%``), itself
compared exactly. A difference whose totals stay within it is still listed
(``beyond_tolerance`` False) but does not make :attr:`Reconciliation.ok` false.

Example::

    result = reconcile(meter, reader, "api_calls", "DAILY", start=jan, end=feb)
    for d in result.differences:
        print(d.subject_id, d.period_start, d.primary, d.posthog, d.kind)
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

from tsmeter.domain import AggregationType, PeriodType, UsageRecord
from tsmeter.domain.modelio import TimeLike, ns
from tsmeter.domain.modelio import period_type as parse_period
from tsmeter.domain.periods import Calendar
from tsmeter.domain.quantities import parse_decimal, to_units
from tsmeter.domain.validation import from_ns, to_ns
from tsmeter.errors import ValidationError
from tsmeter.integrations.posthog.reader import PostHogReader, total_of

if TYPE_CHECKING:
    from tsmeter.metering.meter import Meter

__all__ = ["Difference", "DifferenceKind", "Reconciliation", "Tolerance", "reconcile"]

_UTC = Calendar("UTC")
# exact arithmetic on totals of up to 19 digits and 12 places, and on tolerances
_EXACT = decimal.Context(prec=80, Emax=999, Emin=-999, traps=[decimal.Inexact,
                         decimal.InvalidOperation])  # fmt: skip
_ZERO = Decimal(0)

Key = tuple[str, str, datetime]  # (subject_type, subject_id, period_start)


class DifferenceKind(StrEnum):
    """How the PostHog copy of one subject-period differs from the primary store's."""

    MISSING = "missing in PostHog"
    EXTRA = "extra in PostHog"
    DRIFT = "value drift"


@dataclass(frozen=True)
class Tolerance:
    """How far PostHog's total may be from the primary total: ``value`` (a quantity), or
    ``value`` percent of the primary total when ``relative``; compared exactly. The default,
    zero, accepts only equal totals.

    >>> Tolerance.parse("2%").allows(Decimal(100), Decimal("101.5"))
    True
    >>> Tolerance.parse("0.5").allows(Decimal(3), Decimal(4)), Tolerance().allows(Decimal("0.1"), Decimal("0.10"))
    (False, True)
    """  # noqa: E501

    value: Decimal = _ZERO
    relative: bool = False

    @classmethod
    def parse(cls, text: str | float | Decimal) -> Tolerance:
        """``0.5`` (absolute) or ``2%`` (relative to the primary total)."""
        raw = str(text).strip() if not isinstance(text, float) else repr(text)
        relative = raw.endswith("%")
        problem = f"must be a number >= 0 or a percentage, got {text!r}"
        try:
            value = parse_decimal("tolerance", raw.removesuffix("%"))
        except ValidationError:
            raise ValidationError("tolerance", problem) from None
        if value < 0 or value.adjusted() > 30:
            raise ValidationError("tolerance", problem)
        return cls(value, relative)

    def allows(self, primary: Decimal, posthog: Decimal) -> bool:
        """Whether ``posthog`` is close enough to ``primary`` (exactly)."""
        gap = abs(_EXACT.subtract(posthog, primary))
        if self.relative:
            return _EXACT.multiply(gap, Decimal(100)) <= _EXACT.multiply(self.value, abs(primary))
        return gap <= self.value

    def __str__(self) -> str:
        text = format(self.value.normalize(_EXACT), "f")
        return f"{text}%" if self.relative else text


@dataclass(frozen=True)
class Difference:
    """One subject-period where the copies differ; ``difference`` is ``posthog - primary``,
    exactly (totals are Decimals at the metric's precision; COUNT: numbers of records)."""

    subject_type: str
    subject_id: str
    period_start: datetime
    period_end: datetime
    primary: Decimal
    posthog: Decimal
    difference: Decimal
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
    records: Iterable[UsageRecord],
    period: PeriodType,
    aggregation: AggregationType,
    precision: int,
) -> dict[Key, tuple[Decimal, int]]:
    """Totals and counts per subject and UTC period, from raw records, in exact units."""
    parts: dict[Key, list[int]] = {}  # count, sum, min, max, last ts, last value
    last_ids: dict[Key, str] = {}
    for r in records:
        t = to_ns(r.timestamp)
        key = (r.subject_type, r.subject_id, from_ns(_UTC.start_of(period, t)))
        p = parts.get(key)
        q = to_units("quantity", r.quantity, precision, None)
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
        k: (total_of(aggregation, p[0], p[1], p[2], p[3], p[5], precision), p[0])
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
    precision: int,
) -> dict[Key, tuple[Decimal, int]]:
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
    return _components_from_records(records, period, aggregation, precision)


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
    tolerance: Tolerance | Decimal | str | int = 0,
) -> Reconciliation:
    """Compare ``metric_key``'s totals per subject and UTC period in ``[start, end)`` (widened
    to whole periods) between ``meter``'s store and PostHog, exactly; see the module's docs.

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
    if metric.record_level:
        raise ValidationError(
            "metricKey", f"{metric.key!r} is a {agg.value} metric, computed from its records'"
            " properties and readings, which usage events do not carry: only metrics of the"
            " composable types (COUNT, SUM, AVG, MAX, MIN, LAST) can be reconciled"
        )  # fmt: skip
    primary = _primary(meter, metric.key, period, first, last, subject_type, subject_id,
                       metric.org_id, agg, metric.precision)  # fmt: skip
    copies = reader.get_usage_summaries(
        metric.key, period, start=first, end=last, subject_type=subject_type,
        subject_id=subject_id, org_id=metric.org_id, aggregation=agg,
        precision=metric.precision,
    )  # fmt: skip
    posthog = {
        (s.subject_type, s.subject_id, s.period_start): (s.total_quantity, s.record_count)
        for s in copies
    }
    nothing = (Decimal(0) if agg is AggregationType.COUNT else metric.decimal(0), 0)
    differences = []
    keys = sorted(primary.keys() | posthog.keys())
    for key in keys:
        mine, theirs = primary.get(key, nothing), posthog.get(key, nothing)
        within = allowed.allows(mine[0], theirs[0])
        if theirs[1] < mine[1]:
            kind = DifferenceKind.MISSING
        elif theirs[1] > mine[1]:
            kind = DifferenceKind.EXTRA
        elif theirs[0] != mine[0]:
            kind = DifferenceKind.DRIFT
        else:
            continue
        st, sid, begin = key
        differences.append(Difference(
            subject_type=st, subject_id=sid, period_start=begin,
            period_end=from_ns(_UTC.next_start(period, to_ns(begin))), primary=mine[0],
            posthog=theirs[0], difference=_EXACT.subtract(theirs[0], mine[0]),
            primary_records=mine[1], posthog_records=theirs[1], kind=kind,
            beyond_tolerance=not within,
        ))  # fmt: skip
    return Reconciliation(metric.key, period, agg, first, last, allowed, len(keys), differences)
