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
  :class:`~tsmeter.domain.UsageSummary`, and :class:`TrendPoint` for trends.

Example::

    with PostHogReader(PostHogSettings.from_env()) as reader:
        records = reader.get_usage("api_calls", start=jan, end=feb)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from tsmeter.domain import AggregationType, PeriodType, UsageRecord, UsageSummary
from tsmeter.domain.modelio import TimeLike
from tsmeter.domain.modelio import period_type as parse_period
from tsmeter.domain.periods import Calendar
from tsmeter.domain.validation import from_ns, parse_timestamp, to_ns
from tsmeter.errors import ValidationError
from tsmeter.integrations.posthog.hogql import (
    MAX_ROWS,
    RECORD_COLUMNS,
    SUMMARY_COLUMNS,
    TREND_COLUMNS,
    EventFilter,
    event_name,
    records_query,
    summaries_query,
    trend_query,
)
from tsmeter.integrations.posthog.query_api import PostHogError, QueryClient, QueryResult
from tsmeter.integrations.posthog.settings import PostHogSettings

__all__ = ["PostHogReader", "TrendPoint", "total_of"]

_UTC = Calendar("UTC")


class TrendPoint(NamedTuple):
    """Usage over all matching subjects in one UTC period ``[period_start, period_end)``."""

    period_start: datetime
    period_end: datetime
    total: float
    record_count: int


def total_of(
    aggregation: AggregationType,
    count: int,
    sum_: float,
    lowest: float | None,
    highest: float | None,
    last: float | None,
) -> float:
    """The total of a period under ``aggregation`` from its components.

    >>> total_of(AggregationType.AVG, 4, 10.0, 1.0, 4.0, 2.0)
    2.5
    """
    if aggregation is AggregationType.COUNT:
        return float(count)
    if aggregation is AggregationType.SUM:
        return sum_
    if aggregation is AggregationType.AVG:
        return sum_ / count if count else 0.0
    picked = {AggregationType.MAX: highest, AggregationType.MIN: lowest}.get(aggregation, last)
    return 0.0 if picked is None else picked


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
    try:
        return AggregationType(str(value).upper())
    except ValueError:
        choices = ", ".join(a.value for a in AggregationType)
        raise ValidationError("aggregation", f"must be one of {choices}") from None


def _columns(result: QueryResult, needed: Sequence[str]) -> dict[str, int]:
    """Column positions by name; PostHogError if the answer lacks one."""
    index = {name: i for i, name in enumerate(result.columns)}
    missing = [name for name in needed if name not in index]
    if missing:
        raise PostHogError(f"PostHog's answer lacks the column(s) {', '.join(missing)}")
    return index


class PostHogReader:
    """Reads the usage events the mirror sent back from one PostHog project.

    Needs ``settings.personal_api_key`` (a personal API key with the ``query:read`` scope)
    and ``settings.project_id``; queries go to ``settings.app_host``. ``page_size`` is the
    LIMIT of each query (at most 50,000); other options (``refresh``, ``timeout``,
    ``retries``, ``max_retry_wait``) go to
    :class:`~tsmeter.integrations.posthog.query_api.QueryClient`.
    Example: ``PostHogReader(PostHogSettings.from_env()).get_trend("api_calls", "DAILY",
    start=s, end=e)``.
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

    def iter_usage(
        self,
        metric_key: str,
        subject_type: str | None = None,
        subject_id: str | None = None,
        *,
        start: TimeLike,
        end: TimeLike,
        org_id: str | None = None,
    ) -> Iterator[UsageRecord]:
        """Records of a metric (``org_id``: an org's own metric) in ``[start, end)``, oldest
        first (by time, then event uuid), each event once; streamed page by page.

        Records read back carry no metadata (the mirror does not send it by default).
        """
        lo, hi = _when("start", start), _when("end", end)
        filt = self._filter(metric_key, lo, hi, org_id, subject_type, subject_id)
        after: tuple[datetime, str] = (lo, "")
        seen: set[str] = set()
        while True:
            result = self.client.run(
                records_query(filt, after_time=after[0], after_uuid=after[1], limit=self.page_size)
            )
            index = _columns(result, RECORD_COLUMNS)
            for row in result.rows:
                uuid = str(row[index["event_uuid"]])
                if uuid in seen:
                    continue
                seen.add(uuid)
                yield self._record(metric_key, row, index)
            if _last_page(result, self.page_size):
                return
            last = result.rows[-1]
            key = (_time(last[index["event_time"]]), str(last[index["event_uuid"]]))
            if key <= after:
                raise PostHogError("PostHog returned a page that does not move past the last one")
            after = key

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
    ) -> list[UsageRecord]:
        """Like :meth:`iter_usage`, as a list of at most ``limit`` records.

        Example: ``reader.get_usage("api_calls", "org", "org-1", start=s, end=e)``.
        """
        out: list[UsageRecord] = []
        for record in self.iter_usage(metric_key, subject_type, subject_id, start=start, end=end,
                                      org_id=org_id):  # fmt: skip
            if limit is not None and len(out) >= limit:
                break
            out.append(record)
        return out

    @staticmethod
    def _record(metric_key: str, row: Sequence[Any], index: dict[str, int]) -> UsageRecord:
        return UsageRecord.model_construct(
            id=_text(row[index["record_id"]]) or str(row[index["event_uuid"]]),
            metric_key=metric_key,
            subject_type=str(row[index["subject_type"]]),
            subject_id=str(row[index["subject_id"]]),
            quantity=_number(row[index["quantity"]]),
            timestamp=_time(row[index["event_time"]]),
            metadata={},
            source=_text(row[index["source"]]),
            org_id=_text(row[index["org_id"]]),
        )

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
    ) -> list[UsageSummary]:
        """Summaries per subject of every UTC period overlapping ``[start, end)`` that has
        events, ordered by subject then period; ``total_quantity`` under ``aggregation``
        (the metric's aggregation type: the reader does not know the catalog).

        Example: ``reader.get_usage_summaries("api_calls", "DAILY", start=s, end=e,
        aggregation="COUNT")``.
        """
        period = parse_period(period_type)
        agg = _aggregation(aggregation)
        lo, hi = _aligned(period, start, end)
        filt = self._filter(metric_key, lo, hi, org_id, subject_type, subject_id)
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
                summary = self._summary(metric_key, org_id, period, agg, doc)
                key = (summary.subject_type, summary.subject_id, summary.period_start)
                if key not in seen:
                    seen.add(key)
                    out.append(summary)
            if summary is None or _last_page(result, self.page_size):
                return out
            subject, after_time = (summary.subject_type, summary.subject_id), summary.period_end

    @staticmethod
    def _summary(
        metric_key: str,
        org_id: str | None,
        period: PeriodType,
        agg: AggregationType,
        doc: dict[str, Any],
    ) -> UsageSummary:
        start = _time(doc["period_start"])
        count = int(_number(doc["records"]))
        sum_ = _number(doc["total"])
        lowest, highest = _number(doc["lowest"]), _number(doc["highest"])
        last = _number(doc["last_value"])
        return UsageSummary.model_construct(
            metric_key=metric_key, subject_type=str(doc["subject_type"]),
            subject_id=str(doc["subject_id"]), org_id=org_id, period_type=period,
            period_start=start, period_end=from_ns(_UTC.next_start(period, to_ns(start))),
            timezone="UTC", aggregation_type=agg,
            total_quantity=total_of(agg, count, sum_, lowest, highest, last),
            record_count=count, sum=sum_, min=lowest, max=highest, last_value=last,
            last_timestamp=_time(doc["last_time"]),
        )  # fmt: skip

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
    ) -> list[TrendPoint]:
        """Usage over all matching subjects per UTC hour, day, ISO week, month or year
        overlapping ``[start, end)`` (periods without events are left out), oldest first.

        ``aggregation`` combines records within a period: COUNT, SUM, AVG (sum / count),
        MAX, MIN over all records; LAST adds up each subject's last value (e.g. the
        storage in use at the end of the period).
        Example: ``reader.get_trend("api_calls", "HOURLY", start=s, end=e)``.
        """
        period = parse_period(period_type)
        agg = _aggregation(aggregation)
        if agg is AggregationType.LAST:
            return self._trend_of_lasts(metric_key, period, start, end, subject_type,
                                        subject_id, org_id)  # fmt: skip
        lo, hi = _aligned(period, start, end)
        out: list[TrendPoint] = []
        while True:
            filt = self._filter(metric_key, lo, hi, org_id, subject_type, subject_id)
            result = self.client.run(trend_query(filt, period, limit=self.page_size))
            _columns(result, TREND_COLUMNS)
            for doc in result.dicts():
                begin = _time(doc["period_start"])
                if out and begin <= out[-1].period_start:
                    continue
                count = int(_number(doc["records"]))
                total = total_of(agg, count, _number(doc["total"]), _number(doc["lowest"]),
                                 _number(doc["highest"]), None)  # fmt: skip
                finish = from_ns(_UTC.next_start(period, to_ns(begin)))
                out.append(TrendPoint(begin, finish, total, count))
            if _last_page(result, self.page_size):
                return out
            lo = out[-1].period_end

    def _trend_of_lasts(
        self,
        metric_key: str,
        period: PeriodType,
        start: TimeLike,
        end: TimeLike,
        subject_type: str | None,
        subject_id: str | None,
        org_id: str | None,
    ) -> list[TrendPoint]:
        by_period: dict[datetime, tuple[datetime, float, int]] = {}
        summaries = self.get_usage_summaries(
            metric_key, period, start=start, end=end, subject_type=subject_type,
            subject_id=subject_id, org_id=org_id, aggregation=AggregationType.LAST,
        )  # fmt: skip
        for s in summaries:
            _, total, count = by_period.get(s.period_start, (s.period_end, 0.0, 0))
            by_period[s.period_start] = (s.period_end, total + s.total_quantity,
                                         count + s.record_count)  # fmt: skip
        return [TrendPoint(k, *by_period[k]) for k in sorted(by_period)]
