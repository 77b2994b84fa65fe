"""The PostHog reader: usage read back from PostHog's query API, as tsmeter's own models.

Queries are built by :mod:`tsmeter.integrations.posthog.hogql` (values bound, never pasted) and
sent by
:class:`~tsmeter.integrations.posthog.query_api.QueryClient` (retries, 429 and Retry-After, errors
translated into :class:`~tsmeter.integrations.posthog.query_api.PostHogError` and its subclasses).
What
the reader adds:

* **paging** past PostHog's 50,000-row ceiling by key, never by offset: records by
  ``(timestamp, uuid)``, summaries by ``(subject, period)``, trends by period;
* **de-duplication** by event uuid: inside each query, and again here across pages
  (PostHog does not guarantee that an event is stored once);
* **UTC periods**: summaries and trends cover every UTC period overlapping ``[start, end)``,
  in full (like the primary store's summaries);
* the primary store's models: :class:`~tsmeter.domain.UsageRecord`,
  :class:`~tsmeter.domain.UsageSummary`, and :class:`TrendPoint` for trends;
* **exact quantities**: PostHog sums each event's integer ``units``, and the reader returns
  Decimals with the metric's precision, digit for digit the primary store's. ClickHouse's
  Int64 ``sum`` wraps around silently, so a total is taken only when the count and the
  largest ``|units|`` of its events prove that it cannot have (``count × max|units| ≤
  2**63-1``), or when the float sum of ``quantity`` lies close enough to it to rule out a
  wrap-around; otherwise it is an error naming the series, never a wrong number;
* **corrections**: a ``usage_corrected`` event (timed at its record's timestamp, with the
  record's subject, metric and org) cancels its record (``kind`` CANCEL) or sets its quantity
  (AMEND: ``quantityAfter``, exact decimal text); the latest by ``correctedAt`` (then
  ``correctionId``) of a record wins. Every read first asks for the corrections in its range
  (one query, empty nearly always); where there are some, the read adds the events up one by
  one in Python with the corrections applied, so records, summaries and trends are net of
  them, as the primary store's reads are. A record re-sent with its corrected quantity (a
  backfill) nets the same: a correction sets the quantity, it does not add to it;
* **events of earlier versions** (a float ``quantity``, no ``units``): read at the metric's
  ``precision`` (a reader argument), rounded half to even from the float's shortest repr, as
  the store converted its own copy. Where a query meets one (or events of another
  precision), the reader reads that query's events one by one and adds them up itself,
  exactly.

Example::

    with PostHogReader(PostHogSettings.from_env()) as reader:
        records = reader.get_usage("api_calls", start=jan, end=feb)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple

from tsmeter.domain import AggregationType, PeriodType, UsageRecord, UsageSummary
from tsmeter.domain.modelio import TimeLike
from tsmeter.domain.modelio import period_type as parse_period
from tsmeter.domain.models import RECORD_LEVEL
from tsmeter.domain.periods import Calendar
from tsmeter.domain.quantities import (
    MAX_PRECISION,
    MAX_UNITS,
    Rounding,
    avg_units,
    check_units,
    from_units,
    to_units,
)
from tsmeter.domain.validation import from_ns, parse_timestamp, to_ns
from tsmeter.errors import ValidationError
from tsmeter.integrations.posthog.hogql import (
    CORRECTION_COLUMNS,
    MAX_ROWS,
    RECORD_COLUMNS,
    SUMMARY_COLUMNS,
    TREND_COLUMNS,
    EventFilter,
    HogQLQuery,
    corrections_query,
    event_name,
    records_query,
    summaries_query,
    trend_query,
)
from tsmeter.integrations.posthog.query_api import PostHogError, QueryClient, QueryResult
from tsmeter.integrations.posthog.settings import PostHogSettings

__all__ = ["PostHogReader", "TrendPoint", "exact_sum", "total_of"]

_UTC = Calendar("UTC")
_EXACT_FLOAT = 2**53  # a float holds every integer below this exactly


class TrendPoint(NamedTuple):
    """Usage over all matching subjects in one UTC period ``[period_start, period_end)``;
    ``total`` is exact (COUNT: the number of records)."""

    period_start: datetime
    period_end: datetime
    total: Decimal
    record_count: int


def total_of(
    aggregation: AggregationType,
    count: int,
    sum_: int,
    lowest: int | None,
    highest: int | None,
    last: int | None,
    precision: int,
) -> Decimal:
    """The total of a period under ``aggregation`` from its components in units of
    ``precision``: COUNT is the number of records, AVG the sum over the count rounded half to
    even to ``precision`` (as the store computes them).

    >>> total_of(AggregationType.AVG, 4, 10, 1, 4, 2, 1), total_of(AggregationType.COUNT, 4, 10, 1, 4, 2, 1)
    (Decimal('0.2'), Decimal('4'))
    """  # noqa: E501
    if aggregation is AggregationType.COUNT:
        return Decimal(count)
    if aggregation is AggregationType.SUM:
        units: int | None = sum_
    elif aggregation is AggregationType.AVG:
        units = avg_units(sum_, count)
    else:
        units = {AggregationType.MAX: highest, AggregationType.MIN: lowest}.get(aggregation, last)
    return from_units(units or 0, precision)


def exact_sum(
    total: int, float_total: float, count: int, lowest: int, highest: int, precision: int,
    series: str,
) -> int:  # fmt: skip
    """The exact sum of ``count`` units between ``lowest`` and ``highest`` from ClickHouse's
    Int64 ``total`` (which wraps around on overflow), or a ValidationError naming ``series``.

    When ``count × max(|lowest|, |highest|)`` fits 64 bits no wrap-around is possible. Else
    ``float_total`` (the float sum of the same events' ``quantity``, within a known bound of
    the true sum) decides: a wrapped total is at least ``2**64`` from the true sum, so a total
    within the bound of ``float_total`` is the true sum; any other is an overflow (or events
    whose ``quantity`` disagrees with their ``units``), an error.

    >>> exact_sum(7, 7.0, 2, 3, 4, 0, "s")
    7
    >>> exact_sum(-2**63 + 4, 2.0**63 + 4, 2, 2**62, 2**62 + 4, 0, "api_calls org:acme")
    Traceback (most recent call last):
    tsmeter.errors.ValidationError: sum: api_calls org:acme: the total of 2 records is beyond the 64-bit range of a stored total (about 9.2e+18 units)
    """  # noqa: E501
    largest = max(abs(lowest), abs(highest))
    if count * largest <= MAX_UNITS:
        return total
    # |float sum - true sum| <= n * u * M (each quantity) + (n - 1) * u * n * M (the adds),
    # u = 2**-53, in units; 2**-51 leaves room for the second-order terms
    bound = (count * (count + 1) * largest >> 51) + 2
    if bound >= 2**62:
        raise ValidationError(
            "sum", f"{series}: {count} records of up to {largest} units cannot be summed"
            " exactly by PostHog (its Int64 sum may wrap around)"
        )  # fmt: skip
    approx = Fraction(float_total) * 10**precision
    if abs(approx - total) <= bound and -MAX_UNITS <= total <= MAX_UNITS:
        return total
    raise ValidationError(
        "sum", f"{series}: the total of {count} records is beyond the 64-bit range of a"
        f" stored total (about {float(approx):.2g} units)"
    )  # fmt: skip


def _time(value: object) -> datetime:
    """A time in PostHog's answer (ISO text, with or without offset; a Date) as aware UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise PostHogError(f"PostHog returned an unreadable time: {value!r}") from None
    else:
        raise PostHogError(f"PostHog returned an unreadable time: {value!r}")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PostHogError(f"PostHog returned a non-number where one was expected: {value!r}")
    try:
        return float(value)
    except ValueError:
        raise PostHogError(f"PostHog returned a non-number: {value!r}") from None


def _int(value: object) -> int:
    """An integer in PostHog's answer (a JSON integer, or its text), exactly; a float only
    where it holds the integer exactly."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_FLOAT:
        return int(value)
    raise PostHogError(f"PostHog returned {value!r} where an integer was expected")


def _places(value: object) -> int:
    places = _int(value)
    if not 0 <= places <= MAX_PRECISION:
        raise PostHogError(f"PostHog returned an event of precision {places}")
    return places


def _precision(precision: int | None) -> int | None:
    if precision is None:
        return None
    if isinstance(precision, bool) or not isinstance(precision, int):
        raise ValidationError("precision", f"must be an integer, got {precision!r}")
    if not 0 <= precision <= MAX_PRECISION:
        raise ValidationError("precision", f"must be from 0 to {MAX_PRECISION}, got {precision}")
    return precision


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _aligned(period: PeriodType, start: TimeLike, end: TimeLike) -> tuple[datetime, datetime]:
    """``[start, end)`` widened to whole UTC periods."""
    lo, hi = to_ns(_when("start", start)), to_ns(_when("end", end))
    if hi <= lo:
        raise ValidationError("end", "must be after start")
    edges = _UTC.boundaries(period, lo, hi)
    return from_ns(edges[0]), from_ns(edges[-1])


def _last_page(result: QueryResult, page_size: int) -> bool:
    """Whether nothing follows this page: it is empty, or short and PostHog says no more
    (a short page with ``hasMore`` means PostHog capped it below our LIMIT)."""
    return not result.rows or (len(result.rows) < page_size and not result.has_more)


def _when(field: str, value: TimeLike) -> datetime:
    return parse_timestamp(field, value)


def _aggregation(value: AggregationType | str) -> AggregationType:
    composable = [a.value for a in AggregationType if a not in RECORD_LEVEL]
    try:
        found = AggregationType(str(value).upper())
    except ValueError:
        raise ValidationError("aggregation", f"must be one of {', '.join(composable)}") from None
    if found in RECORD_LEVEL:
        raise ValidationError(
            "aggregation", f"{found.value} is computed from the records' properties and"
            " readings, which usage events do not carry: the PostHog reader reads"
            f" {', '.join(composable)}"
        )  # fmt: skip
    return found


def _columns(result: QueryResult, needed: Sequence[str]) -> dict[str, int]:
    """Column positions by name; PostHogError if the answer lacks one."""
    index = {name: i for i, name in enumerate(result.columns)}
    missing = [name for name in needed if name not in index]
    if missing:
        raise PostHogError(f"PostHog's answer lacks the column(s) {', '.join(missing)}")
    return index


class _Event(NamedTuple):
    """One event as read back: ``units`` and ``precision`` None for an event of an earlier
    version (only the float ``quantity``)."""

    uuid: str
    time: datetime
    record_id: str | None
    subject_type: str
    subject_id: str
    units: int | None
    precision: int | None
    quantity: float
    source: str | None
    org_id: str | None

    def units_at(self, precision: int | None, metric_key: str) -> tuple[int, int]:
        """``(units, precision)`` of this event's quantity at ``precision`` (None: its own).

        An event of an earlier version needs ``precision`` and is rounded half to even from
        its float's shortest repr; an event of more places than ``precision`` is an error.
        """
        if self.units is None or self.precision is None:
            if precision is None:
                raise _needs_precision(metric_key)
            return to_units("quantity", self.quantity, precision, Rounding.HALF_EVEN), precision
        if precision is None or precision == self.precision:
            return self.units, self.precision
        value = from_units(self.units, self.precision)
        try:
            return to_units("quantity", value, precision, None), precision
        except ValidationError:
            raise ValidationError(
                "precision", f"event {self.uuid} of {metric_key!r} holds {value}, more places"
                f" than precision {precision}"
            ) from None  # fmt: skip


@dataclass
class _Parts:
    """The components of one series and period, in units, added up in Python."""

    count: int = 0
    sum: int = 0
    lowest: int = 0
    highest: int = 0
    last: int = 0
    last_key: tuple[datetime, str] | None = None

    def add(self, units: int, key: tuple[datetime, str]) -> None:
        if not self.count:
            self.lowest = self.highest = units
        self.count += 1
        self.sum += units
        self.lowest, self.highest = min(self.lowest, units), max(self.highest, units)
        if self.last_key is None or key > self.last_key:
            self.last, self.last_key = units, key


class _Fix(NamedTuple):
    """What a record's corrections leave of it: cancelled, or its quantity (``after``)."""

    order: tuple[str, str]  # (correctedAt, correctionId): the latest wins
    cancelled: bool
    after: Decimal

    def units(self, event: _Event, precision: int | None, metric_key: str) -> tuple[int, int]:
        """``(units, precision)`` of the corrected quantity of ``event``'s record at
        ``precision`` (None: the event's own)."""
        at = precision if precision is not None else event.precision
        if at is None:
            raise _needs_precision(metric_key)
        try:
            return to_units("quantityAfter", self.after, at, None), at
        except ValidationError:
            raise ValidationError(
                "precision", f"a correction of record {event.record_id!r} of {metric_key!r}"
                f" sets {self.after}, more places than precision {at}"
            ) from None  # fmt: skip


Fixes = dict[str, _Fix]


class PostHogReader:
    """Reads the usage events the mirror sent back from one PostHog project.

    Needs ``settings.personal_api_key`` (a personal API key with the ``query:read`` scope)
    and ``settings.project_id``; queries go to ``settings.app_host``. ``page_size`` is the
    LIMIT of each query (at most 50,000); other options (``refresh``, ``timeout``,
    ``retries``, ``max_retry_wait``) go to
    :class:`~tsmeter.integrations.posthog.query_api.QueryClient`.

    Quantities come back as Decimals. Every read takes the metric's ``precision``: None
    reads each event at the precision it was sent with, which events of earlier versions
    (no ``units``) do not carry: reading those needs the precision.
    Example: ``PostHogReader(PostHogSettings.from_env()).get_trend("api_calls", "DAILY",
    start=s, end=e, precision=6)``.
    """

    def __init__(
        self,
        settings: PostHogSettings,
        *,
        page_size: int = MAX_ROWS,
        client: QueryClient | None = None,
        **client_options: Any,
    ) -> None:
        if not 1 <= page_size <= MAX_ROWS:
            raise ValidationError("page_size", f"must be from 1 to {MAX_ROWS}, got {page_size}")
        self.settings = settings
        self.page_size = page_size
        self.event = event_name(settings.event_prefix, "usage_recorded")
        self.corrected = event_name(settings.event_prefix, "usage_corrected")
        self.client = client or QueryClient(settings, **client_options)

    def close(self) -> None:
        """Close the HTTP session."""
        self.client.close()

    def __enter__(self) -> PostHogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- records ----------------------------------------------------------------------
    def _filter(
        self,
        metric_key: str,
        start: datetime,
        end: datetime,
        org_id: str | None,
        subject_type: str | None,
        subject_id: str | None,
    ) -> EventFilter:
        return EventFilter(self.event, metric_key, start, end, org_id, subject_type, subject_id)

    def _pages(
        self,
        filt: EventFilter,
        query: Callable[..., HogQLQuery],
        columns: Sequence[str],
    ) -> Iterator[tuple[str, Sequence[Any], dict[str, int]]]:
        """``(uuid, row, column index)`` of every row of the paged ``query`` over ``filt``,
        oldest first (by time, then uuid), each uuid once."""
        after: tuple[datetime, str] = (filt.start, "")
        seen: set[str] = set()
        while True:
            result = self.client.run(
                query(filt, after_time=after[0], after_uuid=after[1], limit=self.page_size)
            )
            index = _columns(result, columns)
            for row in result.rows:
                uuid = str(row[index["event_uuid"]])
                if uuid in seen:
                    continue
                seen.add(uuid)
                yield uuid, row, index
            if _last_page(result, self.page_size):
                return
            last = result.rows[-1]
            key = (_time(last[index["event_time"]]), str(last[index["event_uuid"]]))
            if key <= after:
                raise PostHogError("PostHog returned a page that does not move past the last one")
            after = key

    def _events(self, filt: EventFilter) -> Iterator[_Event]:
        """Every event of ``filt``, oldest first (by time, then uuid), each uuid once."""
        for uuid, row, index in self._pages(filt, records_query, RECORD_COLUMNS):
            yield self._event(uuid, row, index)

    def _fixes(self, filt: EventFilter) -> Fixes:
        """What the corrections of the records of ``filt`` leave of each (by record id): the
        latest correction of a record by ``correctedAt``, then ``correctionId``."""
        fixes: Fixes = {}
        corrections = replace(filt, event=self.corrected)
        for _, row, index in self._pages(corrections, corrections_query, CORRECTION_COLUMNS):
            record_id = _text(row[index["record_id"]])
            kind = str(row[index["kind"]]).upper()
            if record_id is None or kind not in ("CANCEL", "AMEND"):
                raise PostHogError(f"PostHog returned a correction it cannot apply: {row!r}")
            try:
                after = Decimal(str(row[index["quantity_after"]]))
            except ArithmeticError:
                raise PostHogError(f"PostHog returned a correction without a quantity: {row!r}"
                                   ) from None  # fmt: skip
            if not after.is_finite():
                raise PostHogError(f"PostHog returned a correction without a quantity: {row!r}")
            order = (str(row[index["corrected_at"]]), str(row[index["correction_id"]]))
            held = fixes.get(record_id)
            if held is None or order > held.order:
                fixes[record_id] = _Fix(order, kind == "CANCEL", after)
        return fixes

    @staticmethod
    def _corrected(
        events: Iterator[_Event], fixes: Fixes, precision: int | None, metric_key: str
    ) -> Iterator[tuple[_Event, int, int]]:
        """``(event, units, precision)`` of each event net of ``fixes``: a cancelled record
        left out, an amended one at its corrected quantity."""
        for event in events:
            fix = fixes.get(event.record_id or "") if fixes else None
            if fix is None:
                units, at = event.units_at(precision, metric_key)
            elif fix.cancelled:
                continue
            else:
                units, at = fix.units(event, precision, metric_key)
            yield event, units, at

    @staticmethod
    def _event(uuid: str, row: Sequence[Any], index: dict[str, int]) -> _Event:
        exact = _int(row[index["has_units"]]) != 0
        return _Event(
            uuid=uuid,
            time=_time(row[index["event_time"]]),
            record_id=_text(row[index["record_id"]]),
            subject_type=str(row[index["subject_type"]]),
            subject_id=str(row[index["subject_id"]]),
            units=check_units("units", _int(row[index["units"]])) if exact else None,
            precision=_places(row[index["precision"]]) if exact else None,
            quantity=_number(row[index["quantity"]]),
            source=_text(row[index["source"]]),
            org_id=_text(row[index["org_id"]]),
        )

    def iter_usage(
        self,
        metric_key: str,
        subject_type: str | None = None,
        subject_id: str | None = None,
        *,
        start: TimeLike,
        end: TimeLike,
        org_id: str | None = None,
        precision: int | None = None,
    ) -> Iterator[UsageRecord]:
        """Records of a metric (``org_id``: an org's own metric) in ``[start, end)``, oldest
        first (by time, then event uuid), each event once; streamed page by page. Quantities
        are Decimals at ``precision`` (None: each event's own; see the class).

        Records read back carry no metadata (the mirror does not send it by default); they
        are net of their corrections (a cancelled record is left out, an amended one has its
        corrected quantity).
        """
        places = _precision(precision)
        lo, hi = _when("start", start), _when("end", end)
        filt = self._filter(metric_key, lo, hi, org_id, subject_type, subject_id)
        fixes = self._fixes(filt)
        for event, units, at in self._corrected(self._events(filt), fixes, places, metric_key):
            yield UsageRecord.model_construct(
                id=event.record_id or event.uuid,
                metric_key=metric_key,
                subject_type=event.subject_type,
                subject_id=event.subject_id,
                quantity=from_units(units, at),
                timestamp=event.time,
                metadata={},
                source=event.source,
                org_id=event.org_id,
            )

    def get_usage(
        self,
        metric_key: str,
        subject_type: str | None = None,
        subject_id: str | None = None,
        *,
        start: TimeLike,
        end: TimeLike,
        org_id: str | None = None,
        limit: int | None = None,
        precision: int | None = None,
    ) -> list[UsageRecord]:
        """Like :meth:`iter_usage`, as a list of at most ``limit`` records.

        Example: ``reader.get_usage("api_calls", "org", "org-1", start=s, end=e)``.
        """
        out: list[UsageRecord] = []
        for record in self.iter_usage(metric_key, subject_type, subject_id, start=start, end=end,
                                      org_id=org_id, precision=precision):  # fmt: skip
            if limit is not None and len(out) >= limit:
                break
            out.append(record)
        return out

    # -- components added up in Python (events of earlier versions, mixed precisions) ---
    def _parts(
        self,
        filt: EventFilter,
        period: PeriodType,
        precision: int | None,
        per_subject: bool,
        fixes: Fixes | None = None,
    ) -> tuple[dict[tuple[str, str, datetime], _Parts], int]:
        """The components per (subject, UTC period), or per period (subject ``("", "")``),
        of every event of ``filt`` net of ``fixes``, in units of ``precision`` (None: the one
        precision of every event), and that precision."""
        events = list(self._events(filt))
        if precision is None:
            found = {e.precision for e in events}
            if None in found:
                raise _needs_precision(filt.metric_key)
            if len(found) > 1:
                raise ValidationError(
                    "precision", f"{filt.metric_key!r} has events of precisions"
                    f" {', '.join(str(p) for p in sorted(found, key=str))} in PostHog; pass the"
                    " metric's precision to read them"
                )  # fmt: skip
            precision = next((p for p in found if p is not None), 0)
        parts: dict[tuple[str, str, datetime], _Parts] = {}
        for e, units, _ in self._corrected(iter(events), fixes or {}, precision, filt.metric_key):
            begin = from_ns(_UTC.start_of(period, to_ns(e.time)))
            key = (e.subject_type, e.subject_id, begin) if per_subject else ("", "", begin)
            parts.setdefault(key, _Parts()).add(units, (e.time, e.record_id or ""))
        for key, p in parts.items():
            if not -MAX_UNITS <= p.sum <= MAX_UNITS:
                _overflow(filt, key, p.count)
        return parts, precision

    # -- summaries and trends ---------------------------------------------------------
    def get_usage_summaries(
        self,
        metric_key: str,
        period_type: PeriodType | str,
        *,
        start: TimeLike,
        end: TimeLike,
        subject_type: str | None = None,
        subject_id: str | None = None,
        org_id: str | None = None,
        aggregation: AggregationType | str = AggregationType.SUM,
        precision: int | None = None,
    ) -> list[UsageSummary]:
        """Summaries per subject of every UTC period overlapping ``[start, end)`` that has
        events, ordered by subject then period; ``total_quantity`` under ``aggregation``
        and every quantity a Decimal at ``precision`` (the metric's aggregation type and
        precision: the reader does not know the catalog; precision None: the events' own).

        Example: ``reader.get_usage_summaries("api_calls", "DAILY", start=s, end=e,
        aggregation="COUNT", precision=6)``.
        """
        period = parse_period(period_type)
        agg = _aggregation(aggregation)
        places = _precision(precision)
        lo, hi = _aligned(period, start, end)
        filt = self._filter(metric_key, lo, hi, org_id, subject_type, subject_id)
        fixes = self._fixes(filt)
        if fixes:  # net of corrections: the events added up one by one
            return self._summaries_by_event(filt, period, agg, places, fixes)
        subject, after_time = ("", ""), lo
        out: list[UsageSummary] = []
        seen: set[tuple[str, str, datetime]] = set()
        while True:
            query = summaries_query(filt, period, after_subject=subject, after_time=after_time,
                                    limit=self.page_size)  # fmt: skip
            result = self.client.run(query)
            _columns(result, SUMMARY_COLUMNS)
            summary = None
            for doc in result.dicts():
                summary = self._summary(filt, period, agg, places, doc)
                if summary is None:  # events to add up one by one
                    return self._summaries_by_event(filt, period, agg, places, fixes)
                key = (summary.subject_type, summary.subject_id, summary.period_start)
                if key not in seen:
                    seen.add(key)
                    out.append(summary)
            if summary is None or _last_page(result, self.page_size):
                return out
            subject, after_time = (summary.subject_type, summary.subject_id), summary.period_end

    @staticmethod
    def _exact_components(
        filt: EventFilter, where: str, places: int | None, doc: dict[str, Any]
    ) -> tuple[int, int, int, int, int] | None:
        """``(count, precision, sum, lowest, highest)`` of one answer row, exact; None when
        its events must be added up one by one (some have no ``units``, or another
        precision)."""
        count, legacy = _int(doc["records"]), _int(doc["legacy"])
        low, high = _int(doc["precision_low"]), _int(doc["precision_high"])
        if legacy or low != high or (places is not None and low != places):
            return None
        at = _places(low)
        lowest, highest = _int(doc["lowest"]), _int(doc["highest"])
        total = exact_sum(_int(doc["total"]), _number(doc["float_total"]), count, lowest,
                          highest, at, f"{filt.metric_key} {where}")  # fmt: skip
        return count, at, total, lowest, highest

    def _summary(
        self,
        filt: EventFilter,
        period: PeriodType,
        agg: AggregationType,
        places: int | None,
        doc: dict[str, Any],
    ) -> UsageSummary | None:
        start = _time(doc["period_start"])
        st, sid = str(doc["subject_type"]), str(doc["subject_id"])
        exact = self._exact_components(filt, f"{st}:{sid} {start.isoformat()}", places, doc)
        if exact is None:
            return None
        count, at, total, lowest, highest = exact
        last = _int(doc["last_value"])
        return self._summary_of(filt, period, agg, at, (st, sid, start), count, total,
                                lowest, highest, last, _time(doc["last_time"]))  # fmt: skip

    @staticmethod
    def _summary_of(
        filt: EventFilter, period: PeriodType, agg: AggregationType, at: int,
        key: tuple[str, str, datetime], count: int, total: int, lowest: int, highest: int,
        last: int, last_time: datetime,
    ) -> UsageSummary:  # fmt: skip
        st, sid, start = key
        return UsageSummary.model_construct(
            metric_key=filt.metric_key, subject_type=st, subject_id=sid, org_id=filt.org_id,
            period_type=period, period_start=start,
            period_end=from_ns(_UTC.next_start(period, to_ns(start))),
            timezone="UTC", aggregation_type=agg,
            total_quantity=total_of(agg, count, total, lowest, highest, last, at),
            record_count=count, sum=from_units(total, at), min=from_units(lowest, at),
            max=from_units(highest, at), last_value=from_units(last, at),
            last_timestamp=last_time,
        )  # fmt: skip

    def _summaries_by_event(
        self,
        filt: EventFilter,
        period: PeriodType,
        agg: AggregationType,
        places: int | None,
        fixes: Fixes,
    ) -> list[UsageSummary]:
        parts, at = self._parts(filt, period, places, per_subject=True, fixes=fixes)
        out = []
        for key in sorted(parts):
            p = parts[key]
            assert p.last_key is not None
            out.append(self._summary_of(filt, period, agg, at, key, p.count, p.sum, p.lowest,
                                        p.highest, p.last, p.last_key[0]))  # fmt: skip
        return out

    def get_trend(
        self,
        metric_key: str,
        period_type: PeriodType | str,
        *,
        start: TimeLike,
        end: TimeLike,
        subject_type: str | None = None,
        subject_id: str | None = None,
        org_id: str | None = None,
        aggregation: AggregationType | str = AggregationType.SUM,
        precision: int | None = None,
    ) -> list[TrendPoint]:
        """Usage over all matching subjects per UTC hour, day, ISO week, month or year
        overlapping ``[start, end)`` (periods without events are left out), oldest first;
        totals are Decimals at ``precision`` (None: the events' own).

        ``aggregation`` combines records within a period: COUNT, SUM, AVG (sum / count,
        rounded half to even), MAX, MIN over all records; LAST adds up each subject's last
        value (e.g. the storage in use at the end of the period).
        Example: ``reader.get_trend("api_calls", "HOURLY", start=s, end=e)``.
        """
        period = parse_period(period_type)
        agg = _aggregation(aggregation)
        places = _precision(precision)
        if agg is AggregationType.LAST:
            return self._trend_of_lasts(metric_key, period, start, end, subject_type,
                                        subject_id, org_id, places)  # fmt: skip
        lo, hi = _aligned(period, start, end)
        whole = self._filter(metric_key, lo, hi, org_id, subject_type, subject_id)
        fixes = self._fixes(whole)
        if fixes:  # net of corrections: the events added up one by one
            return self._trend_by_event(whole, period, agg, places, fixes)
        out: list[TrendPoint] = []
        while True:
            filt = self._filter(metric_key, lo, hi, org_id, subject_type, subject_id)
            result = self.client.run(trend_query(filt, period, limit=self.page_size))
            _columns(result, TREND_COLUMNS)
            for doc in result.dicts():
                begin = _time(doc["period_start"])
                if out and begin <= out[-1].period_start:
                    continue
                exact = self._exact_components(filt, begin.isoformat(), places, doc)
                if exact is None:  # events to add up one by one
                    return self._trend_by_event(whole, period, agg, places, fixes)
                count, at, total, lowest, highest = exact
                finish = from_ns(_UTC.next_start(period, to_ns(begin)))
                value = total_of(agg, count, total, lowest, highest, None, at)
                out.append(TrendPoint(begin, finish, value, count))
            if _last_page(result, self.page_size):
                return out
            lo = out[-1].period_end

    def _trend_by_event(
        self,
        filt: EventFilter,
        period: PeriodType,
        agg: AggregationType,
        places: int | None,
        fixes: Fixes,
    ) -> list[TrendPoint]:
        parts, at = self._parts(filt, period, places, per_subject=False, fixes=fixes)
        out = []
        for _, _, begin in sorted(parts):
            p = parts[("", "", begin)]
            finish = from_ns(_UTC.next_start(period, to_ns(begin)))
            value = total_of(agg, p.count, p.sum, p.lowest, p.highest, None, at)
            out.append(TrendPoint(begin, finish, value, p.count))
        return out

    def _trend_of_lasts(
        self,
        metric_key: str,
        period: PeriodType,
        start: TimeLike,
        end: TimeLike,
        subject_type: str | None,
        subject_id: str | None,
        org_id: str | None,
        precision: int | None,
    ) -> list[TrendPoint]:
        summaries = self.get_usage_summaries(
            metric_key, period, start=start, end=end, subject_type=subject_type,
            subject_id=subject_id, org_id=org_id, aggregation=AggregationType.LAST,
            precision=precision,
        )  # fmt: skip
        found = {-int(s.total_quantity.as_tuple().exponent) for s in summaries}
        if len(found) > 1:  # events of several precisions, each read at its own
            raise ValidationError(
                "precision", f"{metric_key!r} has events of several precisions in PostHog;"
                " pass the metric's precision"
            )  # fmt: skip
        at = found.pop() if found else 0
        by_period: dict[datetime, tuple[datetime, int, int]] = {}
        for s in summaries:
            _, units, count = by_period.get(s.period_start, (s.period_end, 0, 0))
            units += to_units("total", s.total_quantity, at, None)
            by_period[s.period_start] = (s.period_end, units, count + s.record_count)
        return [
            TrendPoint(k, end_, from_units(units, at), count)
            for k, (end_, units, count) in sorted(by_period.items())
        ]


def _needs_precision(metric_key: str) -> ValidationError:
    return ValidationError(
        "precision", f"events of {metric_key!r} written by an earlier version carry no units;"
        " pass the metric's precision to read them"
    )  # fmt: skip


def _overflow(filt: EventFilter, key: tuple[str, str, datetime], count: int) -> None:
    st, sid, begin = key
    where = f"{st}:{sid} " if st or sid else ""
    raise ValidationError(
        "sum", f"{filt.metric_key} {where}{begin.isoformat()}: the total of {count} records is"
        " beyond the 64-bit range of a stored total"
    )  # fmt: skip
