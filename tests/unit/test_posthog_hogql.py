"""The reader's HogQL: parsed by PostHog's own parser, user values only ever in ``values``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hostile import NASTY_NAMES, names
from tests.posthog_query_server import ALLOWED_LITERALS, parse, placeholders, string_literals
from tsmeter.domain import PeriodType
from tsmeter.errors import ValidationError
from tsmeter.integrations.posthog.hogql import (
    MAX_ROWS,
    EventFilter,
    HogQLQuery,
    check_prefix,
    corrections_query,
    event_name,
    records_query,
    summaries_query,
    trend_query,
    utc_text,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 2, 1, tzinfo=UTC)
BENIGN = "plain"

Builder = Callable[[dict[str, str]], HogQLQuery]


def _filter(v: dict[str, str]) -> EventFilter:
    return EventFilter(
        event=v.get("event", "metering.usage_recorded"),
        metric_key=v.get("metric_key", BENIGN),
        start=START,
        end=END,
        org_id=v.get("org_id", BENIGN),
        subject_type=v.get("subject_type", BENIGN),
        subject_id=v.get("subject_id", BENIGN),
    )


BUILDERS: dict[str, tuple[Builder, tuple[str, ...]]] = {
    "records": (
        lambda v: records_query(_filter(v), after_time=START, after_uuid=v.get("after", ""),
                                limit=100),
        ("metric_key", "org_id", "subject_type", "subject_id", "event", "after"),
    ),
    "summaries": (
        lambda v: summaries_query(_filter(v), PeriodType.DAILY,
                                  after_subject=(v.get("after", ""), v.get("after_id", "")),
                                  after_time=START),
        ("metric_key", "org_id", "subject_type", "subject_id", "event", "after", "after_id"),
    ),
    "trend": (
        lambda v: trend_query(_filter(v), PeriodType.HOURLY),
        ("metric_key", "org_id", "subject_type", "subject_id", "event"),
    ),
    "corrections": (
        lambda v: corrections_query(_filter(v), after_time=START, after_uuid=v.get("after", ""),
                                    limit=100),
        ("metric_key", "org_id", "subject_type", "subject_id", "event", "after"),
    ),
}  # fmt: skip

CASES = [(kind, param) for kind, (_, params) in BUILDERS.items() for param in params]


def check_parses(query: HogQLQuery) -> None:
    """PostHog's parser accepts the text; placeholders and values match; no foreign literal."""
    ast = parse(query.text)
    assert not ast.get("error"), f"{ast.get('message')}\n{query.text}"
    assert placeholders(ast) == set(query.values)
    assert string_literals(ast) <= ALLOWED_LITERALS
    assert ast["limit"]["value"] <= MAX_ROWS


@pytest.mark.parametrize(("kind", "param"), CASES)
def test_hostile_values_go_only_into_values(kind: str, param: str) -> None:
    """Every nasty name in every parameter leaves the query text unchanged and sits, exactly,
    in ``values``; PostHog's parser accepts every such query."""
    build, _ = BUILDERS[kind]
    reference = build({param: BENIGN})
    for nasty in NASTY_NAMES:
        query = build({param: nasty})
        assert query.text == reference.text
        assert nasty in query.values.values()
        assert nasty not in query.text or nasty in (" ", ",", "=", "\\")
        check_parses(query)


@given(metric=names, subject_type=names, subject_id=names, org=names, after=names)
@settings(max_examples=60, deadline=None)
def test_random_hostile_values_never_change_the_text(
    metric: str, subject_type: str, subject_id: str, org: str, after: str
) -> None:
    """Generated hostile names in all parameters at once: the same text, and it parses."""
    values = {"metric_key": metric, "subject_type": subject_type, "subject_id": subject_id,
              "org_id": org, "after": after, "after_id": after}  # fmt: skip
    for build, _ in BUILDERS.values():
        query = build(values)
        assert query.text == build({}).text
        check_parses(query)


@pytest.mark.parametrize("period", list(PeriodType))
def test_every_period_parses(period: PeriodType) -> None:
    """Summaries and trends of every period type are valid HogQL."""
    f = _filter({})
    check_parses(summaries_query(f, period))
    check_parses(trend_query(f, period))


def test_optional_filters_change_the_text_not_the_values_of_others() -> None:
    """Without a subject filter the query has no subject placeholders (and still parses)."""
    f = EventFilter("metering.usage_recorded", "api_calls", START, END)
    query = records_query(f, after_time=START, after_uuid="", limit=10)
    assert "subject_type" not in query.values
    assert query.values["org_id"] == ""  # a global metric: orgId null or absent
    check_parses(query)


def test_the_request_body_asks_for_utc_and_fresh_results() -> None:
    """The body is a HogQLQuery with values, UTC modifiers and a blocking refresh."""
    q = trend_query(_filter({}), PeriodType.DAILY)
    body = q.request()
    assert body["query"]["kind"] == "HogQLQuery"
    assert body["query"]["modifiers"] == {"convertToProjectTimezone": False}
    assert body["query"]["values"] == dict(q.values)
    assert body["refresh"] == "force_blocking"
    assert "toTimeZone(timestamp, 'UTC')" in q.text


@pytest.mark.parametrize(
    "prefix", ["", "Metering", "1x", "x.y", "x y", "x'", 'x"', "x\\", "x" * 33, "é", None]
)
def test_a_bad_event_prefix_is_refused(prefix: object) -> None:
    """Only ``[a-z][a-z0-9_]{0,31}`` prefixes make event names."""
    with pytest.raises(ValidationError, match="eventPrefix"):
        check_prefix(prefix)


def test_event_names() -> None:
    """A valid prefix makes ``prefix.kind``."""
    assert event_name("acme_usage", "usage_recorded") == "acme_usage.usage_recorded"


@pytest.mark.parametrize("limit", [0, -1, MAX_ROWS + 1, True])
def test_limits_are_bounded(limit: int) -> None:
    """LIMIT is 1..50,000, never more than PostHog returns."""
    with pytest.raises(ValidationError, match="limit"):
        records_query(_filter({}), after_time=START, after_uuid="", limit=limit)


def test_times_are_sent_as_exact_utc_text() -> None:
    """Times become UTC text with microseconds; naive times are refused."""
    paris = datetime(2026, 3, 29, 3, 0, 0, 1, tzinfo=UTC).astimezone()
    assert utc_text(paris) == "2026-03-29T03:00:00.000001Z"
    with pytest.raises(ValidationError):
        utc_text(datetime(2026, 1, 1))


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                    timezones=st.just(UTC)))  # fmt: skip
def test_utc_text_round_trips(value: datetime) -> None:
    """The text a time is sent as reads back as the same instant."""
    assert datetime.fromisoformat(utc_text(value)) == value
    assert datetime.fromisoformat(utc_text(value + timedelta(microseconds=1))) > value


def _run(text: str, events: list[dict[str, object]]) -> list[list[object]]:
    """Evaluate ``text`` over events whose properties are ``events`` (as the test server)."""
    from zoneinfo import ZoneInfo

    from tests.hogql_eval import Context, JsonText, Query

    rows = [{"properties": JsonText.of(p)} for p in events]
    _, out = Query(parse(text), Context(rows, {}, ZoneInfo("UTC"), False)).run(limit_cap=None)
    return out


@pytest.mark.parametrize("period", list(PeriodType))
def test_aggregates_sum_integer_units_never_floats(period: PeriodType) -> None:
    """Summaries and trends add the Int64 ``units`` of each event (the float ``quantity`` only
    as the overflow check), count the events without units, and read both precisions."""
    f = _filter({})
    for query in (summaries_query(f, period), trend_query(f, period)):
        text = " ".join(query.text.split())
        assert "sum(units) AS total" in text and "sum(quantity) AS float_total" in text
        assert "JSONExtractInt(properties, 'units')" in text
        assert "countIf(has_units = 0) AS legacy" in text
        assert "min(units) AS lowest" in text and "max(units) AS highest" in text
        assert "min(precision) AS precision_low" in text
    summary = " ".join(summaries_query(f, period).text.split())
    assert "argMax(units, (ts, record_id)) AS last_value" in summary


def test_the_evaluator_sums_int64_as_clickhouse_does() -> None:
    """``sum`` of Int64 wraps around (as in ClickHouse, which is why the reader checks);
    ``JSONExtractInt`` of a missing key is 0 and ``JSONHas`` tells it apart; a value whose
    ClickHouse reading is uncertain is refused, not guessed."""
    from tests.hogql_eval import Unsupported

    text = (
        "SELECT sum(JSONExtractInt(properties, 'units')) AS total,"
        " countIf(JSONHas(properties, 'units') = 0) AS legacy, count() AS n FROM events LIMIT 1"
    )
    big = 2**62 + 1
    assert _run(text, [{"units": big}, {"units": big}, {"quantity": 1.5}]) == [
        [2 * big - 2**64, 1, 3]
    ]
    assert _run(text, [{"units": -(2**63 - 1)}, {"units": -5}]) == [
        [2**63 - 4, 0, 2]
    ]  # -2**63 - 4, wrapped
    assert _run(text, [{"units": 10**18}, {"units": -3}]) == [[10**18 - 3, 0, 2]]
    for uncertain in (1.5, "12", True, 2**63):
        with pytest.raises(Unsupported):
            _run(text, [{"units": uncertain}])
