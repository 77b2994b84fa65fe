"""The PostHog reader against a local query endpoint that parses every query with PostHog's
parser, checks its placeholders and evaluates it over captured events."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from functools import partial
from typing import Any

import pytest

import tsmeter
from tests.hostile import NASTY_NAMES
from tests.posthog_query_server import QueryServer, query_server
from tsmeter.domain import AggregationType, PeriodType, RecordRow
from tsmeter.domain.models import RECORD_LEVEL
from tsmeter.domain.validation import to_ns
from tsmeter.errors import StorageUnavailableError, ValidationError
from tsmeter.integrations.posthog.events import record_event
from tsmeter.integrations.posthog.query_api import (
    PostHogAuthError,
    PostHogError,
    PostHogQueryError,
    PostHogQuotaError,
    PostHogRateLimitError,
)
from tsmeter.integrations.posthog.reader import PostHogReader
from tsmeter.integrations.posthog.settings import PostHogSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FAR = datetime(2040, 1, 1, tzinfo=UTC)


@pytest.fixture
def endpoint() -> Iterator[QueryServer]:
    """A query endpoint on 127.0.0.1; any request that broke a rule fails the test."""
    with query_server() as server:
        yield server
        assert server.failures == [], "\n\n".join(server.failures)


def settings_for(server: QueryServer, **changes: Any) -> PostHogSettings:
    """Reader settings pointing at the local endpoint."""
    fields = {"host": server.url, "personal_api_key": server.token,
              "project_id": server.project_id, **changes}  # fmt: skip
    return PostHogSettings(**fields)


def make_reader(
    server: QueryServer, sleeps: list[float] | None = None, **options: Any
) -> PostHogReader:
    """A reader on the endpoint whose waits are recorded in ``sleeps``, not slept."""
    record = sleeps if sleeps is not None else []
    return PostHogReader(settings_for(server), sleep=record.append, **options)


def captured(
    rows: Sequence[RecordRow], settings: PostHogSettings | None = None, precision: int = 6
) -> list[dict[str, Any]]:
    """The events the mirror sends for ``rows`` (its own mapping), as captured: through JSON,
    as the SDK posts them."""
    s = settings or PostHogSettings()
    out = []
    for row in rows:
        e = record_event(row, s, precision=precision)
        out.append(json.loads(json.dumps({
            "uuid": e.uuid, "event": e.name, "timestamp": e.timestamp.isoformat(),
            "distinct_id": e.distinct_id, "properties": dict(e.properties),
        })))  # fmt: skip
    return out


def units(quantity: object, precision: int = 6) -> int:
    """``quantity`` (a number or decimal text) in units of ``precision``, by :mod:`decimal`."""
    scaled = Decimal(repr(quantity) if isinstance(quantity, float) else str(quantity))
    scaled = scaled.scaleb(precision)
    assert scaled == scaled.to_integral_value(), f"{quantity} has more than {precision} places"
    return int(scaled)


def value(r: RecordRow, precision: int = 6) -> Decimal:
    """A row's quantity, by :mod:`decimal`."""
    return Decimal(r.quantity).scaleb(-precision)


def row(rid: str, when: datetime, quantity: object = 1, subject: str = "org-1", *,
        metric: str = "api_calls", subject_type: str = "org", org: str | None = None,
        source: str | None = None, precision: int = 6) -> RecordRow:  # fmt: skip
    """A record row of ``quantity`` (stored as units of ``precision``)."""
    return RecordRow(rid, metric, subject_type, subject, org, units(quantity, precision),
                     to_ns(when), None, source)  # fmt: skip


# -- records ----------------------------------------------------------------------------
def test_records_come_back_as_recorded(endpoint: QueryServer) -> None:
    """Records read back equal the rows the mirror sent: ids, subjects, quantities, times to
    the microsecond, sources and org scope; only this metric, scope and range."""
    rows = [row(f"r{i}", T0 + timedelta(minutes=7 * i, microseconds=i), i * 0.5,
                f"org-{i % 3}", source="api" if i % 2 else None) for i in range(30)]  # fmt: skip
    others = [row("other-metric", T0, metric="storage_gb"), row("org-scoped", T0, org="acme"),
              row("too-late", datetime(2026, 2, 1, tzinfo=UTC))]  # fmt: skip
    endpoint.add_events(captured(rows + others))
    with make_reader(endpoint, page_size=7) as reader:
        got = reader.get_usage("api_calls", start=T0, end=datetime(2026, 2, 1, tzinfo=UTC))
        one = reader.get_usage("api_calls", "org", "org-1", start=T0, end=FAR)
        scoped = reader.get_usage("api_calls", start=T0, end=FAR, org_id="acme")
    assert [(r.id, r.subject_id, str(r.quantity), r.timestamp, r.source) for r in got] == [
        (r.id, r.subject_id, f"{Decimal(i) / 2:.6f}", T0 + timedelta(minutes=7 * i,
                                                                      microseconds=i), r.source)
        for i, r in enumerate(rows)
    ]  # fmt: skip
    assert all(r.org_id is None and r.metric_key == "api_calls" for r in got)
    assert [r.id for r in one] == [r.id for r in rows if r.subject_id == "org-1"] + ["too-late"]
    assert [(r.id, r.org_id) for r in scoped] == [("org-scoped", "acme")]
    assert len(endpoint.requests) > 5  # paged by 7


def test_hostile_names_round_trip_through_every_filter(endpoint: QueryServer) -> None:
    """Nasty metric keys, subject types, subject ids and org ids are found by exact match, read
    back unchanged, and carried through paging cursors; the query text never changes."""
    rows = []
    for i, (name, other) in enumerate(itertools.product(NASTY_NAMES[:9], NASTY_NAMES[-3:])):
        rows.append(row(f"id-{i}-{name}", T0 + timedelta(seconds=i), 1.0, name,
                        metric=other, subject_type=name, org=other))  # fmt: skip
    endpoint.add_events(captured(rows))
    with make_reader(endpoint, page_size=2) as reader:
        for r in rows[:12]:
            got = reader.get_usage(r.metric_key, r.subject_type, r.subject_id, start=T0, end=FAR,
                                   org_id=r.org_id)  # fmt: skip
            assert [(g.id, g.subject_type, g.subject_id, g.org_id) for g in got] == [
                (x.id, x.subject_type, x.subject_id, x.org_id) for x in rows
                if (x.metric_key, x.subject_type, x.subject_id, x.org_id)
                == (r.metric_key, r.subject_type, r.subject_id, r.org_id)
            ]  # fmt: skip
        metric, org = rows[0].metric_key, rows[0].org_id
        summaries = reader.get_usage_summaries(metric, "DAILY", start=T0, end=FAR, org_id=org)
    expected = sorted({(x.subject_type, x.subject_id) for x in rows
                       if x.metric_key == metric and x.org_id == org})  # fmt: skip
    assert [(s.subject_type, s.subject_id) for s in summaries] == expected
    texts = {r["query"] for r in endpoint.requests}
    # one records text with subject filters, one summaries text, and the corrections asked
    # for before each read (with and without subject filters)
    assert len(texts) == 4
    for request in endpoint.requests:
        for nasty in NASTY_NAMES:
            if len(nasty) > 1:
                assert nasty not in request["query"]


def test_paging_past_50000_rows(endpoint: QueryServer) -> None:
    """50,500 events (and 300 duplicates) come back as 50,500 records, 50,500 hourly
    summaries and 50,500 trend points, each in two queries of at most 50,000 rows."""
    n = 50_500
    rows = [row(f"r{i}", T0 + timedelta(hours=i), float(i % 10), f"org-{i % 5}")
            for i in range(n)]  # fmt: skip
    events = captured(rows)
    endpoint.add_events(events + events[:150] + events[-150:])
    end = T0 + timedelta(hours=n)
    with make_reader(endpoint) as reader:
        records = reader.get_usage("api_calls", start=T0, end=end)
        assert len(endpoint.requests) == 3  # the corrections (none), then two pages
        summaries = reader.get_usage_summaries("api_calls", "HOURLY", start=T0, end=end)
        assert len(endpoint.requests) == 6
        trend = reader.get_trend("api_calls", "HOURLY", start=T0, end=end)
        assert len(endpoint.requests) == 9
    assert [r.id for r in records] == [r.id for r in rows]
    assert len(summaries) == n and all(s.record_count == 1 for s in summaries)
    assert sorted((s.subject_id, s.period_start) for s in summaries) == sorted(
        (r.subject_id, T0 + timedelta(hours=i)) for i, r in enumerate(rows)
    )
    assert [(p.period_start, p.total, p.record_count) for p in trend] == [
        (T0 + timedelta(hours=i), Decimal(i % 10), 1) for i, r in enumerate(rows)
    ]
    assert all("LIMIT 50000" in r["query"] for r in endpoint.requests)


def test_pages_capped_below_the_limit_are_followed() -> None:
    """A PostHog that returns fewer rows than asked for but says ``hasMore`` is paged on."""
    rows = [row(f"r{i}", T0 + timedelta(hours=i), 1.0, f"org-{i % 3}") for i in range(25)]
    with query_server(max_rows=4) as server:
        server.add_events(captured(rows))
        with make_reader(server, page_size=10) as reader:
            assert len(reader.get_usage("api_calls", start=T0, end=FAR)) == 25
            hourly = reader.get_usage_summaries("api_calls", "HOURLY", start=T0, end=FAR)
            assert len(hourly) == 25
            assert len(reader.get_trend("api_calls", "HOURLY", start=T0, end=FAR)) == 25
        assert server.failures == []


def test_duplicate_events_count_once(endpoint: QueryServer) -> None:
    """The same uuid stored twice (same page), or re-sent with another time (another page), is
    one record, and counts once in summaries and trends."""
    rows = [row(f"r{i}", T0 + timedelta(minutes=i), 2.0) for i in range(10)]
    events = captured(rows)
    moved = dict(events[0], timestamp=(T0 + timedelta(minutes=30)).isoformat())
    endpoint.add_events(events + events[3:5] + [moved])
    with make_reader(endpoint, page_size=4) as reader:
        records = reader.get_usage("api_calls", start=T0, end=FAR)
        daily = reader.get_usage_summaries("api_calls", "DAILY", start=T0, end=FAR)
        trend = reader.get_trend("api_calls", "DAILY", start=T0, end=FAR)
    assert sorted(r.id for r in records) == sorted(r.id for r in rows)
    assert [(s.record_count, str(s.total_quantity)) for s in daily] == [(10, "20.000000")]
    assert [(p.record_count, str(p.total)) for p in trend] == [(10, "20.000000")]


# -- periods and aggregation --------------------------------------------------------------
@pytest.mark.parametrize("zone", ["America/Los_Angeles", "Asia/Kathmandu"])
def test_periods_are_utc_whatever_the_project_zone(zone: str) -> None:
    """Events a microsecond either side of UTC hour, day, ISO week, month and year
    boundaries land in the UTC periods, in a project whose zone is not UTC."""
    edge = datetime(2027, 1, 1, tzinfo=UTC)  # a Friday: also a month and year edge
    monday = datetime(2026, 12, 28, tzinfo=UTC)
    stamps = [edge - timedelta(microseconds=1), edge, monday - timedelta(microseconds=1), monday]
    rows = [row(f"r{i}", t, 1.0) for i, t in enumerate(stamps)]
    with query_server(project_zone=zone) as server:
        server.add_events(captured(rows))
        with make_reader(server) as reader:
            starts = {
                p: [s.period_start for s in reader.get_usage_summaries(
                    "api_calls", p, start=datetime(2026, 12, 1, tzinfo=UTC),
                    end=datetime(2027, 2, 1, tzinfo=UTC))]
                for p in PeriodType
            }  # fmt: skip
        assert server.failures == []
    utc = lambda *a: datetime(*a, tzinfo=UTC)  # noqa: E731
    assert starts[PeriodType.HOURLY] == [utc(2026, 12, 27, 23), utc(2026, 12, 28, 0),
                                         utc(2026, 12, 31, 23), utc(2027, 1, 1, 0)]  # fmt: skip
    assert starts[PeriodType.DAILY] == [utc(2026, 12, 27), utc(2026, 12, 28), utc(2026, 12, 31),
                                        utc(2027, 1, 1)]  # fmt: skip
    assert starts[PeriodType.WEEKLY] == [utc(2026, 12, 21), utc(2026, 12, 28)]
    assert starts[PeriodType.MONTHLY] == [utc(2026, 12, 1), utc(2027, 1, 1)]
    assert starts[PeriodType.YEARLY] == [utc(2026, 1, 1), utc(2027, 1, 1)]


COMPOSABLE = [a for a in AggregationType if a not in RECORD_LEVEL]


@pytest.mark.parametrize("aggregation", COMPOSABLE)
def test_summaries_equal_the_primary_stores(
    endpoint: QueryServer, aggregation: AggregationType
) -> None:
    """For every aggregation type, PostHog's summaries (LAST ties settled by record id) equal
    the embedded store's for the same records."""
    stamps = [T0 + timedelta(hours=h) for h in (0, 5, 5, 5, 30, 31, 47, 200)]
    rows = [row(f"id-{c}", t, q, f"org-{i % 2}")
            for i, (c, t, q) in enumerate(zip("hcaebgdf", stamps, [3, -1, 7, 2.5, 0, 9, 4, 1],
                                              strict=True))]  # fmt: skip
    endpoint.add_events(captured(rows))
    with tsmeter.connect("sqlite:///:memory:") as meter:
        meter.define_metric("api_calls", aggregation_type=aggregation)
        meter.record_batch([{"id": r.id, "metricKey": "api_calls", "subjectType": "org",
                             "subjectId": r.subject_id, "quantity": value(r),
                             "timestamp": datetime.fromtimestamp(r.ts / 1e9, UTC)}
                            for r in rows])  # fmt: skip
        for period in ("DAILY", "WEEKLY"):
            primary = meter.get_usage_summaries("api_calls", period, start=T0, end=FAR)
            with make_reader(endpoint) as reader:
                copy = reader.get_usage_summaries("api_calls", period, start=T0, end=FAR,
                                                  aggregation=aggregation)  # fmt: skip
            key = lambda s: (s.subject_type, s.subject_id, s.period_start)  # noqa: E731
            fields = ("period_end", "total_quantity", "record_count", "sum", "min", "max",
                      "last_value", "last_timestamp", "aggregation_type")  # fmt: skip
            assert [(key(s), *(getattr(s, f) for f in fields)) for s in sorted(copy, key=key)] == [
                (key(s), *(getattr(s, f) for f in fields)) for s in sorted(primary, key=key)
            ]


def test_trends_combine_all_subjects(endpoint: QueryServer) -> None:
    """A daily trend per aggregation type: counts, sums, averages of all records, and for
    LAST the sum of each subject's last value."""
    rows = [
        row("a", T0, 2.0, "x"),
        row("b", T0 + timedelta(hours=1), 4.0, "y"),
        row("c", T0 + timedelta(hours=2), 6.0, "x"),
        row("d", T0 + timedelta(days=1), 1.0),
    ]
    endpoint.add_events(captured(rows))
    with make_reader(endpoint, page_size=1) as reader:

        def totals(agg: str) -> list[str]:
            return [str(p.total) for p in reader.get_trend("api_calls", "DAILY", start=T0,
                                                             end=FAR, aggregation=agg)]  # fmt: skip

        assert totals("COUNT") == ["3", "1"]
        assert totals("SUM") == ["12.000000", "1.000000"]
        assert totals("AVG") == ["4.000000", "1.000000"]
        assert totals("MAX") == ["6.000000", "1.000000"]
        assert totals("MIN") == ["2.000000", "1.000000"]
        assert totals("LAST") == ["10.000000", "1.000000"]  # x's last (6) + y's last (4)
        with pytest.raises(ValidationError, match="aggregation"):
            totals("MEDIAN")
        for record_level in ("UNIQUE_COUNT", "TIME_WEIGHTED_SUM"):
            with pytest.raises(ValidationError, match=r"aggregation: .* reads COUNT, SUM"):
                totals(record_level)


# -- errors -----------------------------------------------------------------------------
def test_429_is_retried_after_retry_after(endpoint: QueryServer) -> None:
    """Two 429s (one with Retry-After: 2) are waited out; then the answer arrives."""
    endpoint.add_events(captured([row("r1", T0)]))
    busy = {"type": "throttled_error", "detail": "Request was throttled."}
    endpoint.faults += [(429, {"Retry-After": "2"}, busy), (429, {}, busy)]
    sleeps: list[float] = []
    with make_reader(endpoint, sleeps) as reader:
        assert [r.id for r in reader.get_usage("api_calls", start=T0, end=FAR)] == ["r1"]
    assert sleeps[0] == 2.0 and len(sleeps) == 2 and 0 < sleeps[1] <= 60
    assert len(endpoint.requests) == 4  # the corrections asked for three times, the records


def test_429_that_does_not_stop_is_a_clear_error(endpoint: QueryServer) -> None:
    """Endless 429s end after the retries; a Retry-After beyond the bound ends at once."""
    busy = {"detail": "Request was throttled."}
    endpoint.faults += [(429, {"Retry-After": "1"}, busy)] * 3
    sleeps: list[float] = []
    with (
        make_reader(endpoint, sleeps, retries=2) as reader,
        pytest.raises(PostHogRateLimitError, match="after 3 attempts"),
    ):
        reader.get_usage("api_calls", start=T0, end=FAR)
    assert sleeps == [1.0, 1.0]
    endpoint.faults.append((429, {"Retry-After": "3600"}, busy))
    with (
        make_reader(endpoint, sleeps) as reader,
        pytest.raises(PostHogRateLimitError, match="3600 s") as info,
    ):
        reader.get_usage("api_calls", start=T0, end=FAR)
    assert info.value.retry_after == 3600 and sleeps == [1.0, 1.0]


def test_a_wrong_key_is_an_auth_error_that_names_the_setting(endpoint: QueryServer) -> None:
    """401 is not retried and says which setting to fix, without the key itself."""
    settings = settings_for(endpoint, personal_api_key="phx_wrong_key_123")
    with PostHogReader(settings) as reader, pytest.raises(PostHogAuthError) as info:
        reader.get_usage("api_calls", start=T0, end=FAR)
    message = str(info.value)
    assert "HTTP 401" in message and "TSMETER_POSTHOG_PERSONAL_API_KEY" in message
    assert "query:read" in message and "phx_wrong_key_123" not in message
    assert isinstance(info.value, StorageUnavailableError)
    assert len(endpoint.requests) == 0  # refused before the body was looked at


def test_a_wrong_project_is_an_auth_error(endpoint: QueryServer) -> None:
    """404 for an unknown project names TSMETER_POSTHOG_PROJECT_ID."""
    with (
        PostHogReader(settings_for(endpoint, project_id="999")) as reader,
        pytest.raises(PostHogAuthError, match="TSMETER_POSTHOG_PROJECT_ID"),
    ):
        reader.get_usage("api_calls", start=T0, end=FAR)


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (402, {"detail": "Payment required"}, PostHogQuotaError, "quota"),
        (400, {"detail": "Query quota exceeded for this team"}, PostHogQuotaError, "quota"),
        (400, {"type": "validation_error", "detail": "Unknown function"}, PostHogQueryError,
         "Unknown function"),
        (403, {"detail": "API key missing required scope 'query:read'"}, PostHogAuthError,
         "query:read"),
    ],
)  # fmt: skip
def test_refusals_are_translated(endpoint: QueryServer, status: int, body: dict[str, str],
                                 error: type[Exception], text: str) -> None:  # fmt: skip
    """Quota, query and scope refusals become their own errors, with PostHog's detail."""
    endpoint.faults.append((status, {}, body))
    with make_reader(endpoint) as reader, pytest.raises(error, match=text):
        reader.get_usage("api_calls", start=T0, end=FAR)
    assert len(endpoint.requests) == 1


def test_server_errors_and_timeouts_are_retried(endpoint: QueryServer) -> None:
    """A 502, a non-JSON 500 and a request slower than the timeout are retried."""
    endpoint.add_events(captured([row("r1", T0)]))
    endpoint.faults += [(502, {}, {"detail": "bad gateway"}), (500, {}, b"<html>oops</html>")]
    endpoint.delays += [0.0, 0.0, 1.5]
    sleeps: list[float] = []
    with make_reader(endpoint, sleeps, timeout=0.5) as reader:
        assert [r.id for r in reader.get_usage("api_calls", start=T0, end=FAR)] == ["r1"]
    assert len(sleeps) == 3


def test_a_server_that_keeps_failing_is_unavailable(endpoint: QueryServer) -> None:
    """After the retries, a 503 is a PostHogError naming the endpoint and the last failure."""
    endpoint.faults += [(503, {}, {"detail": "down"})] * 3
    with make_reader(endpoint, retries=2) as reader, pytest.raises(PostHogError) as info:
        reader.get_usage("api_calls", start=T0, end=FAR)
    assert "after 3 attempts" in str(info.value) and "HTTP 503: down" in str(info.value)


def test_an_error_in_a_200_answer_is_a_query_error(endpoint: QueryServer) -> None:
    """An answer carrying ``error`` is not read as an empty result."""
    endpoint.faults.append((200, {}, {"results": [], "columns": [], "error": "Timeout"}))
    with make_reader(endpoint) as reader, pytest.raises(PostHogQueryError, match="Timeout"):
        reader.get_usage("api_calls", start=T0, end=FAR)


def test_the_reader_needs_its_settings() -> None:
    """Without a personal API key or a project id, a ValidationError names the variable."""
    with pytest.raises(ValidationError, match="TSMETER_POSTHOG_PERSONAL_API_KEY"):
        PostHogReader(PostHogSettings(project_id="1"))
    with pytest.raises(ValidationError, match="TSMETER_POSTHOG_PROJECT_ID"):
        PostHogReader(PostHogSettings(personal_api_key="phx_1"))
    with pytest.raises(ValidationError, match="page_size"):
        PostHogReader(PostHogSettings(personal_api_key="phx_1", project_id="1"), page_size=50_001)


def test_an_unreachable_host_is_unavailable() -> None:
    """Connection refused, after the retries, is a PostHogError (StorageUnavailableError)."""
    with query_server() as server:
        url = server.url
    settings = PostHogSettings(host=url, personal_api_key="phx_1", project_id="1")
    with (
        PostHogReader(settings, retries=1, sleep=lambda s: None) as reader,
        pytest.raises(StorageUnavailableError, match="ConnectionError"),
    ):
        reader.get_usage("api_calls", start=T0, end=FAR)


# -- exact quantities ---------------------------------------------------------------------
def places(precision: int) -> Decimal:
    """The quantum of ``precision`` decimal places: Decimal('0.01') for 2."""
    return Decimal(1).scaleb(-precision)


def expected_summaries(
    values: dict[tuple[str, datetime], list[tuple[datetime, str, Decimal]]], precision: int
) -> dict[tuple[str, datetime], dict[str, str]]:
    """Per (subject, day): the totals under each aggregation type, by :mod:`decimal` (AVG
    rounded half to even to ``precision``; LAST by time, then record id), as text."""
    q = places(precision)
    out = {}
    for key, items in values.items():
        amounts = [v for _, _, v in items]
        total = sum(amounts, Decimal(0))
        out[key] = {
            "COUNT": str(len(amounts)),
            "SUM": str(total.quantize(q)),
            "AVG": str((total / len(amounts)).quantize(q, rounding=ROUND_HALF_EVEN)),
            "MIN": str(min(amounts).quantize(q)),
            "MAX": str(max(amounts).quantize(q)),
            "LAST": str(max(items)[2].quantize(q)),
        }
    return out


def check_exact(
    reader: PostHogReader, rows: list[RecordRow], amounts: list[Decimal], precision: int,
    *, read_at: int | None = None,
) -> None:  # fmt: skip
    """Records, daily summaries under every aggregation type and daily trends read back
    equal, digit for digit, what :mod:`decimal` computes from ``amounts``."""
    q = places(precision)
    got = reader.get_usage("api_calls", start=T0, end=FAR, precision=read_at)
    assert {r.id: str(r.quantity) for r in got} == {
        r.id: str(a.quantize(q)) for r, a in zip(rows, amounts, strict=True)
    }
    by_key: dict[tuple[str, datetime], list[tuple[datetime, str, Decimal]]] = {}
    by_day: dict[datetime, list[Decimal]] = {}
    for r, a in zip(rows, amounts, strict=True):
        when = datetime.fromtimestamp(r.ts // 10**9, UTC)
        day = when.replace(hour=0, minute=0, second=0)
        by_key.setdefault((r.subject_id, day), []).append((when, r.id, a))
        by_day.setdefault(day, []).append(a)
    expected = expected_summaries(by_key, precision)
    for agg in COMPOSABLE:
        summaries = reader.get_usage_summaries("api_calls", "DAILY", start=T0, end=FAR,
                                               aggregation=agg, precision=read_at)  # fmt: skip
        assert {(s.subject_id, s.period_start): str(s.total_quantity) for s in summaries} == {
            k: v[agg.value] for k, v in expected.items()
        }, agg
        trend = reader.get_trend("api_calls", "DAILY", start=T0, end=FAR, aggregation=agg,
                                 precision=read_at)  # fmt: skip
        if agg is AggregationType.LAST:
            lasts: dict[datetime, Decimal] = {}
            for (_, day), v in expected.items():
                lasts[day] = lasts.get(day, Decimal(0)) + Decimal(v["LAST"])
            want = {day: str(v.quantize(q)) for day, v in lasts.items()}
        else:
            want = {
                day: expected_summaries({("", day): [(T0, "", a) for a in v]}, precision)[
                    ("", day)][agg.value]
                for day, v in by_day.items()
            }  # fmt: skip
        assert {p.period_start: str(p.total) for p in trend} == want, agg
    sums = reader.get_usage_summaries("api_calls", "DAILY", start=T0, end=FAR,
                                      precision=read_at)  # fmt: skip
    assert sum((s.sum for s in sums), Decimal(0)) == sum(amounts, Decimal(0))


def spread(amounts: list[Decimal], precision: int, subjects: int = 3) -> list[RecordRow]:
    """Rows of ``amounts`` over ``subjects`` subjects and two days, every few minutes."""
    return [
        row(f"r{i:05d}", T0 + timedelta(minutes=3 * i), a, f"org-{i % subjects}",
            precision=precision)
        for i, a in enumerate(amounts)
    ]  # fmt: skip


def test_a_tenth_added_many_times_is_exact(endpoint: QueryServer) -> None:
    """960 records of 0.1 (a float sum of them is not 96): every total is exact."""
    amounts = [Decimal("0.1")] * 960
    assert sum([0.1] * 960) != 96.0
    rows = spread(amounts, 6)
    endpoint.add_events(captured(rows))
    with make_reader(endpoint) as reader:
        check_exact(reader, rows, amounts, 6)
        (point,) = reader.get_trend("api_calls", "MONTHLY", start=T0, end=FAR)
    assert str(point.total) == "96.000000"


@pytest.mark.parametrize(
    ("precision", "low", "high"),
    [(2, -5_000, 99_999), (6, -10**12, 10**12), (0, -10**9, 10**9), (12, -10**15, 10**15)],
)  # fmt: skip
def test_cents_micros_and_negatives_are_exact(
    endpoint: QueryServer, precision: int, low: int, high: int
) -> None:
    """Random amounts of 2 (cents), 6, 0 and 12 decimal places, refunds among them: records,
    summaries and trends equal Python's decimal sums, digit for digit."""
    rng = random.Random(precision)
    amounts = [Decimal(rng.randint(low, high)).scaleb(-precision) for _ in range(400)]
    amounts += [Decimal(1).scaleb(-precision), -Decimal(1).scaleb(-precision), Decimal(0)]
    rows = spread(amounts, precision)
    endpoint.add_events(captured(rows, precision=precision))
    with make_reader(endpoint, page_size=150) as reader:
        check_exact(reader, rows, amounts, precision)
        check_exact(reader, rows, amounts, precision, read_at=precision)


def test_totals_near_the_64_bit_limit(endpoint: QueryServer) -> None:
    """Units whose count times largest value exceeds 2**63-1: a total inside the range is
    exact (PostHog's Int64 sum did not wrap); one beyond it is an error naming the series,
    never a wrapped-around number."""
    big = 4 * 10**18
    fits = [Decimal(big + 123), Decimal(big + 7), Decimal(-big)]
    rows = spread(fits, 0, subjects=1)
    over = [row(f"o{i}", T0 + timedelta(days=1, minutes=i), big, "org-big", precision=0)
            for i in range(3)]  # fmt: skip
    endpoint.add_events(captured(rows + over, precision=0))
    with make_reader(endpoint) as reader:
        (summary,) = reader.get_usage_summaries("api_calls", "DAILY", start=T0, end=FAR,
                                                subject_id="org-0")  # fmt: skip
        assert str(summary.total_quantity) == str(big + 130)
        assert (summary.min, summary.max) == (Decimal(-big), Decimal(big + 123))
        with pytest.raises(ValidationError, match=r"api_calls org:org-big .*64-bit range"):
            reader.get_usage_summaries("api_calls", "DAILY", start=T0, end=FAR)
        with pytest.raises(ValidationError, match="64-bit range"):
            reader.get_trend("api_calls", "DAILY", start=T0, end=FAR)
        (first,) = reader.get_trend("api_calls", "DAILY", start=T0, end=T0 + timedelta(hours=1))
        assert first.total == Decimal(big + 130)


def old_event(rid: str, when: datetime, quantity: float, subject: str = "org-1") -> dict[str, Any]:
    """An event as versions before exact decimals sent it: a float ``quantity``, no ``units``
    and no ``precision``."""
    (event,) = captured([row(rid, when, 0, subject)])
    props = event["properties"]
    del props["units"], props["precision"]
    props["quantity"] = quantity
    return json.loads(json.dumps(event))


OLD = [0.1, 0.2, 1.005, 2.675, 1.015, -0.125, 3.0, 19.99, 0.3, 1e-7, 12345.675]


def test_events_of_earlier_versions_are_read_at_the_metrics_precision(
    endpoint: QueryServer,
) -> None:
    """Events without ``units`` (float quantities) are read at the precision asked for, half
    to even from each float's shortest repr, alone or mixed with new events in one period;
    without a precision they are refused, not guessed."""
    old = [old_event(f"old{i:02d}", T0 + timedelta(minutes=5 * i), q, f"org-{i % 2}")
           for i, q in enumerate(OLD)]  # fmt: skip
    old_amounts = [Decimal(repr(q)).quantize(places(2), rounding=ROUND_HALF_EVEN) for q in OLD]
    assert [str(a) for a in old_amounts[2:6]] == ["1.00", "2.68", "1.02", "-0.12"]
    new_amounts = [Decimal("0.01"), Decimal("-7.50"), Decimal("100.99")]
    new_rows = [row(f"new{i}", T0 + timedelta(hours=2, minutes=i), a, f"org-{i % 2}",
                    precision=2) for i, a in enumerate(new_amounts)]  # fmt: skip
    old_rows = [
        row(e["properties"]["recordId"], T0 + timedelta(minutes=5 * i), a, f"org-{i % 2}",
            precision=2)
        for i, (e, a) in enumerate(zip(old, old_amounts, strict=True))
    ]  # fmt: skip
    alone_at = T0 + timedelta(days=1)  # a subject and a day with old events only
    old.append(old_event("alone", alone_at, 0.7, "org-old"))
    old_rows.append(row("alone", alone_at, "0.70", "org-old", precision=2))
    old_amounts.append(Decimal("0.70"))
    endpoint.add_events(old + captured(new_rows, precision=2))
    with make_reader(endpoint, page_size=4) as reader:
        check_exact(reader, old_rows + new_rows, old_amounts + new_amounts, 2, read_at=2)
        for subject in (None, "org-old"):
            reads = [
                partial(reader.get_usage, "api_calls", "org", subject, start=T0, end=FAR),
                partial(reader.get_usage_summaries, "api_calls", "DAILY", start=T0, end=FAR,
                        subject_id=subject),
                partial(reader.get_trend, "api_calls", "DAILY", start=alone_at, end=FAR,
                        subject_id=subject),
            ]  # fmt: skip
            for read in reads:
                with pytest.raises(ValidationError, match="precision"):
                    read()


def test_events_of_another_precision(endpoint: QueryServer) -> None:
    """Events sent at precision 2 and at 6 are read exactly at 6; at 2 an event with more
    places is an error; without a precision, a mix is refused."""
    rows2 = [row("a", T0, "1.25", precision=2), row("b", T0 + timedelta(hours=1), "-0.5",
                                                          precision=2)]  # fmt: skip
    rows6 = [row("c", T0 + timedelta(hours=2), "0.000001"), row("d", T0 + timedelta(hours=3), "3")]
    endpoint.add_events(captured(rows2, precision=2) + captured(rows6))
    with make_reader(endpoint) as reader:
        (daily,) = reader.get_usage_summaries("api_calls", "DAILY", start=T0, end=FAR, precision=6)
        assert str(daily.total_quantity) == "3.750001"
        assert [str(r.quantity) for r in reader.get_usage("api_calls", start=T0, end=FAR)] == [
            "1.25", "-0.50", "0.000001", "3.000000",
        ]  # fmt: skip
        with pytest.raises(ValidationError, match="precision"):
            reader.get_usage_summaries("api_calls", "DAILY", start=T0, end=FAR)
        with pytest.raises(ValidationError, match="more places than precision 2"):
            reader.get_trend("api_calls", "DAILY", start=T0, end=FAR, precision=2)
        (hourly,) = reader.get_trend("api_calls", "HOURLY", start=T0, end=T0 + timedelta(hours=1))
        assert str(hourly.total) == "1.25"
