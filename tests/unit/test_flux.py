"""Flux text for InfluxDB 2.x, checked with Flux's own parser: literals, queries, task scripts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import fluxcheck
from tests.hostile import NASTY_NAMES, PIECES, names
from tsmeter.adapters.influxdb import flux
from tsmeter.adapters.influxdb.tasks import hour_offset, periods_for, task_name, task_scripts
from tsmeter.domain import MetricDefinition, PeriodType
from tsmeter.errors import ValidationError

HOSTILE = [
    *NASTY_NAMES, *PIECES, "a,b c=d", 'say "hi"', "line\nbreak", "tab\there", "cr\rhere",
    "${x}", "\\${x}", "$${", "${", "$", "}", "\\", "ünï©ødé 😀", "=", "\u2028", "\x00\x01\x7f",
]  # fmt: skip
T = 1_767_225_600_000_000_000


def test_the_parser_rejects_invalid_flux() -> None:
    """The check has teeth: unbalanced calls, dangling operators and bad escapes are errors."""
    results = fluxcheck.parse(['from(bucket: "b" |> range(start: -1h)', "x = 1 +", 'x = "\\q"'])
    assert all(r.errors for r in results)


def test_hostile_string_literals_round_trip() -> None:
    """Every hostile value, written as a Flux literal, parses back to exactly itself."""
    results = fluxcheck.assert_valid(*(f"x = {flux.string(v)}" for v in HOSTILE))
    assert [r.strings for r in results] == [[v] for v in HOSTILE]


@settings(max_examples=15, deadline=None)
@given(st.lists(st.one_of(names, st.text(st.characters(codec="utf-8"))), min_size=1, max_size=40))
def test_any_string_literal_round_trips(values: list[str]) -> None:
    """Random text (control characters, ``${``, quotes, backslashes, non-BMP) round-trips."""
    results = fluxcheck.assert_valid(*(f"x = {flux.string(v)}" for v in values))
    assert [r.strings for r in results] == [[v] for v in values]


@pytest.mark.parametrize("good", ["1s", "90s", "1h30m", "2d", "1w", "1mo", "367d", "5µs"])
def test_durations_accepted(good: str) -> None:
    """Flux duration literals pass and parse as Flux."""
    assert flux.duration(good) == good
    fluxcheck.assert_valid(f"x = {good}")


@pytest.mark.parametrize("bad", ["", "0s", "1", "h", "-1h", "1h ", "1m; drop", "1 h", "1x", "1.5h"])
def test_durations_refused(bad: str) -> None:
    """Anything else is a ValidationError naming the field."""
    with pytest.raises(ValidationError, match="lateness"):
        flux.duration(bad, "lateness")


@pytest.mark.parametrize("bad", ["", "1a", "a-b", "a b", "option", "import", 'x"', "é"])
def test_identifiers_refused(bad: str) -> None:
    """Identifiers are plain ASCII words and not keywords."""
    with pytest.raises(ValidationError):
        flux.identifier(bad)


def _scan_influxql_string(text: str) -> tuple[str, str]:
    """The InfluxQL scanner's reading of one double-quoted string at the start of ``text``
    (escapes ``\\n``, ``\\\\``, ``\\"``, ``\\'``; raw newlines refused), and the rest."""
    assert text[0] == '"'
    out, i = [], 1
    while text[i] != '"':
        assert text[i] != "\n"
        if text[i] == "\\":
            out.append({"n": "\n", "\\": "\\", '"': '"', "'": "'"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out), text[i + 1 :]


@pytest.mark.parametrize("value", HOSTILE)
def test_delete_predicate_quotes_values(value: str) -> None:
    """A delete predicate reads back (under InfluxQL string rules) as the values given."""
    predicate = flux.delete_predicate({"metric": value, "org": "acme"})
    assert predicate.startswith("metric=")
    first, rest = _scan_influxql_string(predicate[len("metric=") :])
    assert first == value
    assert rest.startswith(" AND org=")
    assert _scan_influxql_string(rest[len(" AND org=") :]) == ("acme", "")


def _queries(v: list[str]) -> list[flux.Flux]:
    """Every query the 2.x store sends, built from the values ``v``."""
    key = (v[0], v[1], v[2], v[3])
    out = []
    q = flux.Flux()
    out.append(flux.points(v[4], "usage", T, T + 1000, flux.series_predicate(q, [key]), q))
    out.append(flux.points(v[4], "usage", T, T + 1000, None))
    q = flux.Flux()
    out.append(flux.points(v[4], "usage", T, T + 1, flux.metric_predicate(q, *v[:4]), q))
    q = flux.Flux()
    out.append(flux.edges(v[4], "usage", "quantity", flux.metric_predicate(q, v[0], None), q))
    out.append(flux.rid_lookup(v[4], v[5]))
    q = flux.Flux()
    out.append(flux.counts(v[4], flux.metric_predicate(q, v[0], v[3]), q))
    q = flux.Flux()
    out.append(flux.everything(v[4], f"r.metric == {q.bind('metric', v[0])} and exists r.org", q))
    out += [
        flux.watermark(v[4], v[5]),
        flux.dirty(v[4], T, (v[0], v[3])),
        flux.dirty(v[4], 0, None),
    ]
    out += [flux.log_end(v[4]), flux.raw_components(v[4], T, T + 10, [(v[0], v[3]), (v[1], None)])]
    out += [flux.raw_components(v[4], T, T + 10, None), flux.events(v[4], 0, flux.END)]
    return out


@settings(max_examples=10, deadline=None)
@given(st.lists(names, min_size=6, max_size=6), st.lists(names, min_size=6, max_size=6))
def test_queries_are_valid_flux_and_never_hold_values(a: list[str], b: list[str]) -> None:
    """Every query parses (its bound values rendered as the options influxdb-client sends),
    every value arrives intact, and the query text is the same whatever the values are."""
    first, second = _queries(a), _queries(b)
    assert [q.text for q in first] == [q.text for q in second]
    results = fluxcheck.assert_valid(*(q.source() for q in first))
    for query, result in zip(first, results, strict=True):
        bound = [v for v in query.params.values() if isinstance(v, str)]
        assert result.strings[: len(bound)] == bound


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "Asia/Kathmandu", "America/St_Johns"])
def test_task_scripts_are_valid_flux(zone: str) -> None:
    """Every period's task script parses, for hostile bucket names too, and names its task,
    bucket, zone and summary measurement exactly."""
    for bucket in ["usage", 'my "bucket" ${x}', "b\\", "b\nc"]:
        scripts = task_scripts(bucket, zone, list(PeriodType), every="30s", lateness="6h")
        assert sorted(scripts) == sorted(task_name(bucket, p, zone) for p in PeriodType)
        results = fluxcheck.assert_valid(*scripts.values())
        for (name, script), result in zip(scripts.items(), results, strict=True):
            assert name in result.strings and result.strings.count(bucket) >= 2
            assert "every: 30s" in script or "every: 1h," in script or "every: 1d," in script
            if zone != "UTC" and "every: 1h, offset" not in script:
                assert zone in result.strings


def test_task_options_are_checked() -> None:
    """Durations that are not Flux durations never reach a script."""
    with pytest.raises(ValidationError, match="every"):
        task_scripts("b", "UTC", [PeriodType.HOURLY], every="1m}\nx = 1")
    with pytest.raises(ValidationError, match="lateness"):
        task_scripts("b", "UTC", [PeriodType.HOURLY], lateness="3h) |> drop()")
    with pytest.raises(ValidationError, match="timezone"):
        task_scripts("b", "Mars/Olympus", [PeriodType.DAILY])


def test_hourly_windows_follow_the_zones_minutes() -> None:
    """Local hours start 15 minutes past the UTC hour in Kathmandu, 30 in St John's; a zone
    whose offset changes by half an hour (Lord Howe) has no hourly task."""
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert hour_offset("Asia/Kathmandu", now) == 15
    assert hour_offset("America/St_Johns", now) == 30
    assert hour_offset("Europe/Paris", now) == 0
    with pytest.raises(ValidationError, match="fixed minute"):
        hour_offset("Australia/Lord_Howe", now)


def test_periods_follow_the_metric_definitions() -> None:
    """Hourly and daily always; then each period a metric resets on (NEVER adds none)."""
    make: Callable[[str], MetricDefinition] = lambda p: MetricDefinition(key="m", reset_period=p)  # noqa: E731
    assert periods_for([]) == [PeriodType.HOURLY, PeriodType.DAILY]
    assert periods_for([make("NEVER"), make("MONTHLY"), make("WEEKLY")]) == [
        PeriodType.HOURLY, PeriodType.DAILY, PeriodType.WEEKLY, PeriodType.MONTHLY,
    ]  # fmt: skip
