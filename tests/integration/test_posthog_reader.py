"""The PostHog reader against a local query endpoint that parses every query with PostHog's
parser, checks its placeholders and evaluates it over captured events."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import tsmeter
from tests.hostile import NASTY_NAMES
from tests.posthog_query_server import QueryServer, query_server
from tsmeter.domain import AggregationType, PeriodType, RecordRow
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
    rows: Sequence[RecordRow], settings: PostHogSettings | None = None
) -> list[dict[str, Any]]:
    """The events the mirror sends for ``rows`` (its own mapping), as captured."""
    s = settings or PostHogSettings()
    out = []
    for row in rows:
        e = record_event(row, s)
        out.append({"uuid": e.uuid, "event": e.name, "timestamp": e.timestamp.isoformat(),
                    "distinct_id": e.distinct_id, "properties": dict(e.properties)})  # fmt: skip
    return out


def row(rid: str, when: datetime, quantity: float = 1.0, subject: str = "org-1", *,
        metric: str = "api_calls", subject_type: str = "org", org: str | None = None,
        source: str | None = None) -> RecordRow:  # fmt: skip
    """A record row."""
    return RecordRow(rid, metric, subject_type, subject, org, quantity, to_ns(when), None, source)


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
    assert [(r.id, r.subject_id, r.quantity, r.timestamp, r.source) for r in got] == [
        (r.id, r.subject_id, r.quantity, T0 + timedelta(minutes=7 * i, microseconds=i), r.source)
        for i, r in enumerate(rows)
    ]
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
    assert len(texts) == 2  # one records text with subject filters, one summaries text
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
        assert len(endpoint.requests) == 2
        summaries = reader.get_usage_summaries("api_calls", "HOURLY", start=T0, end=end)
        assert len(endpoint.requests) == 4
        trend = reader.get_trend("api_calls", "HOURLY", start=T0, end=end)
        assert len(endpoint.requests) == 6
    assert [r.id for r in records] == [r.id for r in rows]
    assert len(summaries) == n and all(s.record_count == 1 for s in summaries)
    assert sorted((s.subject_id, s.period_start) for s in summaries) == sorted(
        (r.subject_id, T0 + timedelta(hours=i)) for i, r in enumerate(rows)
    )
    assert [(p.period_start, p.total, p.record_count) for p in trend] == [
        (T0 + timedelta(hours=i), r.quantity, 1) for i, r in enumerate(rows)
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
    assert [(s.record_count, s.total_quantity) for s in daily] == [(10, 20.0)]
    assert [(p.record_count, p.total) for p in trend] == [(10, 20.0)]


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


@pytest.mark.parametrize("aggregation", list(AggregationType))
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
                             "subjectId": r.subject_id, "quantity": r.quantity,
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

        def totals(agg: str) -> list[float]:
            return [p.total for p in reader.get_trend("api_calls", "DAILY", start=T0, end=FAR,
                                                        aggregation=agg)]  # fmt: skip

        assert totals("COUNT") == [3.0, 1.0]
        assert totals("SUM") == [12.0, 1.0]
        assert totals("AVG") == [4.0, 1.0]
        assert totals("MAX") == [6.0, 1.0]
        assert totals("MIN") == [2.0, 1.0]
        assert totals("LAST") == [10.0, 1.0]  # x's last (6) + y's last (4)
        with pytest.raises(ValidationError, match="aggregation"):
            totals("MEDIAN")


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
    assert len(endpoint.requests) == 3


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
