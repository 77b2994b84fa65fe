"""The intake's paths give the same rows and errors: the compiled one (``_intake.c``, plain
records up to the first it cannot decide, where it is built), msgspec (plain records a chunk at
a time, src/tsmeter/metering/intake.py) and the Python loop, which is the reference.

Each test runs the same input through each (``compiled_path`` and ``fast_path`` off as
needed) and compares rows and errors, including records after a good one, whose names are then
cached. Quantities become integer units of their metric's precision; the units are also checked
against Python's ``decimal`` over the same inputs.
"""

from __future__ import annotations

import gc
import itertools
import math
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import ROUND_DOWN, Context, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsmeter.domain import AggregationType, MetricDefinition, RecordRow, Rounding
from tsmeter.errors import NotFoundError, ValidationError
from tsmeter.metering import intake as intake_module
from tsmeter.metering.intake import Intake

#: the intake's paths, the reference last
PATHS = (("compiled",) if intake_module.compiled is not None else ()) + ("msgspec", "python")
needs_compiled = pytest.mark.skipif(
    intake_module.compiled is None, reason="tsmeter.metering._intake is not built"
)

HOSTILE = st.text(
    alphabet=st.sampled_from([*"a Z0,= \"\\\n\t'=⧵é漢🙂\x00\x7f", "\ud800"]),
    min_size=0,
    max_size=12,
)
NAMES = st.one_of(
    st.sampled_from(
        ["api_calls", "tokens", "cents", "whole", "rounded", "org", "org-1", "o 1,=\\", "é"]
    ),
    HOSTILE,
    st.none(),
    st.integers(),
    st.lists(st.integers(), max_size=1),
)
#: values at the edges of the metrics' places and of 64 bits, as every type a caller may give
EDGE_QUANTITIES = [
    0.1, -0.1, 0.125, 0.01, 19.99, -19.99, 0.000001, 0.0000001, 1e-7, 123456.789012,
    1234567.8901234, 9223372036854.775807, 9223372036854.775, 9223372036854775807,
    9223372036854775808, -9223372036854775807, -9223372036854775808, 9223372036854, 9223372037,
    2**53, 2**53 + 1, 9007199254.740991, 9007199254.740993, 1e15, 1e16, 1e19, -1e19,
    "0.1", " 12.50 ", "1_000", "1e3", "-0", "abc", "", "NaN", "0.1234567", "9223372036854775807",
    Decimal("0.1"), Decimal("-19.99"), Decimal("1e-7"), Decimal("sNaN"), Decimal("-0.000000"),
    Decimal("9223372036854.775807"), Decimal("9223372036854.775808"), Decimal("1e400"),
]  # fmt: skip
QUANTITIES = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6).map(lambda x: round(x, 2)),
    st.floats(min_value=-1e9, max_value=1e9).map(lambda x: round(x, 6)),
    st.integers(min_value=-(2**1100), max_value=2**1100),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=-(10**9), max_value=10**9, places=2),
    st.booleans(),
    st.sampled_from(["1", -0.0, 1e16, 9999999999999998.0, *EDGE_QUANTITIES]),
)
TIMESTAMPS = st.one_of(
    st.none(),
    st.datetimes(
        min_value=datetime(1969, 1, 1), max_value=datetime(2300, 1, 1), timezones=st.just(UTC)
    ),
    st.datetimes(timezones=st.sampled_from([timezone(timedelta(hours=5, minutes=45))])),
    st.datetimes(),
    st.sampled_from(["2026-03-01T00:00:00Z", "2026-03-01", 5]),
)


@st.composite
def rfc3339_texts(draw: st.DrawFn) -> str:
    """Times as clients send them: RFC 3339 with 0 to 9 fractional digits (the last three
    zero or not), Z or an offset (whole hours, +05:45, and out-of-range ones), and near misses
    (a space for the T, lower-case z, no offset, padding, non-ASCII digits, day 30 of
    February)."""
    at = draw(st.datetimes(min_value=datetime(1969, 12, 31), max_value=datetime(2262, 1, 1)))
    text = at.strftime("%Y-%m-%dT%H:%M:%S")
    digits = draw(st.integers(min_value=0, max_value=9))
    if digits:
        text += "." + f"{at.microsecond:06d}{draw(st.integers(0, 999)):03d}"[:digits]
    text += draw(st.sampled_from(["Z", "+00:00", "-00:00", "+05:45", "-11:30", "+23:59",
                                  "+24:00", "+05:60", ""]))  # fmt: skip
    return draw(st.sampled_from([text, text, text, text.replace("T", " "), text.lower(),
                                 f" {text}", text.replace("2", "\u0662"),
                                 text[:5] + "02-30" + text[10:]]))  # fmt: skip


RFC3339_TEXTS = rfc3339_texts()


#: metric key -> (precision, rounding): the default 6 places, cents, whole numbers (a COUNT
#: metric counts 1 unit), cents with rounding
PRECISIONS: dict[str, tuple[int, Rounding | None]] = {
    "api_calls": (6, None), "tokens": (6, None), "é": (6, None), "cents": (2, None),
    "whole": (0, None), "rounded": (2, Rounding.HALF_EVEN),
}  # fmt: skip


def _resolver(key: str, org: str | None) -> MetricDefinition:
    if key not in PRECISIONS:
        raise NotFoundError(f"unknown metric {key!r}")
    kind = AggregationType.COUNT if key in ("api_calls", "whole") else AggregationType.SUM
    precision, rounding = PRECISIONS[key]
    return MetricDefinition(key=key, name=key, aggregation_type=kind, org_id=org,
                            precision=precision, rounding=rounding)  # fmt: skip


def _ids(count: int) -> list[str]:
    return [f"gen-{next(_COUNTER)}" for _ in range(count)]


_COUNTER = itertools.count()


def _run_intake(
    monkeypatch: pytest.MonkeyPatch, items: list[Any], path: str
) -> list[RecordRow] | tuple[str, str]:
    global _COUNTER
    _COUNTER = itertools.count()
    monkeypatch.setattr(intake_module, "compiled_path", path == "compiled")
    monkeypatch.setattr(intake_module, "fast_path", path != "python")
    monkeypatch.setattr(intake_module, "new_ids", _ids)
    try:
        # names seen by an earlier call are taken from the cache: warm it the same way
        intake = Intake(_resolver)
        intake.rows([{"metricKey": "api_calls", "subjectType": "org", "subjectId": "org-1"}])
        return intake.rows(items, now_ns=1_000)
    except (ValidationError, NotFoundError, TypeError) as exc:
        return (type(exc).__name__, str(exc))


def _same_on_all_paths(
    monkeypatch: pytest.MonkeyPatch, items: list[Any]
) -> list[RecordRow] | tuple[str, str]:
    """The result of each path, checked equal to the Python loop's; returns that one."""
    results = {path: _run_intake(monkeypatch, items, path) for path in PATHS}
    python = results["python"]
    for path, result in results.items():
        assert _comparable(result) == _comparable(python), path
    _check_units(items, python)
    return python


RECORDS = st.fixed_dictionaries(
    {"metricKey": NAMES, "subjectType": NAMES, "subjectId": NAMES},
    optional={
        "id": NAMES,
        "quantity": QUANTITIES,
        "timestamp": TIMESTAMPS,
        "metadata": st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.integers())),
        "source": NAMES,
        "orgId": NAMES,
        "org_id": NAMES,
        "metric_key": NAMES,
        "quantiy": st.integers(),
    },
)
PLAIN = st.fixed_dictionaries(
    {
        "metricKey": st.sampled_from(["api_calls", "tokens", "cents", "whole", "rounded"]),
        "subjectType": st.just("org"),
        "subjectId": st.sampled_from(["org-1", "o 1,=\\", "é"]),
    },
    optional={
        "id": st.one_of(
            st.text(
                alphabet=st.sampled_from(["a", " ", "~", "\x1f", "\x7f", "\x80", "é"]), max_size=4
            ),
            st.sampled_from(["", "x" * 256, "x" * 257]),
        ),
        "quantity": st.one_of(
            st.floats(),
            st.floats(min_value=-1e6, max_value=1e6).map(lambda x: round(x, 2)),
            st.floats(min_value=-1e9, max_value=1e9).map(lambda x: round(x, 6)),
            st.integers(min_value=-(2**70), max_value=2**70),
            st.integers(min_value=-(10**13), max_value=10**13),
            st.sampled_from(EDGE_QUANTITIES),
        ),
        "timestamp": st.one_of(
            st.datetimes(
                min_value=datetime(1969, 12, 1),
                max_value=datetime(2300, 1, 1),
                timezones=st.just(UTC),
            ),
            RFC3339_TEXTS,
        ),
        "source": st.sampled_from(["org-1", "api"]),
        "orgId": st.sampled_from(["org-1", "acme"]),
        "metadata": st.none(),  # a key with None counts as absent
        "quantiy": st.integers(),  # a typo is an error
    },
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.lists(st.one_of(RECORDS, PLAIN, st.integers(), st.just([])), max_size=8),
        st.lists(PLAIN, max_size=20),  # mostly good records: the fast path's own decisions
    )
)
def test_intake_rows_are_the_same(items: list[Any]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        _same_on_all_paths(monkeypatch, items)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(PLAIN, RECORDS))
def test_each_record_after_a_good_one_gives_the_same(item: dict[str, Any]) -> None:
    """A record after a good one of its metric and subject (whose names are then known, so
    the fast path decides it) gives the same row or error."""
    warm = {k: v for k, v in item.items() if k in ("metricKey", "subjectType", "subjectId",
                                                   "orgId", "org_id", "metric_key")}  # fmt: skip
    items = [{**warm, "quantity": 1.0}, item]
    with pytest.MonkeyPatch.context() as monkeypatch:
        _same_on_all_paths(monkeypatch, items)


class _NoOffset(tzinfo):
    """A time zone that knows no offset: its datetimes are naive."""

    def utcoffset(self, dt: datetime | None) -> None:
        return None


EDGES: dict[str, list[Any]] = {
    "id": ["", "x" * 256, "x" * 257, "a\x1f", "a\x7f", "a\x80", "é", " ", "~", 5, None],
    "quantity": [math.nan, math.inf, -math.inf, 2**1100, -(2**1100), True, -0.0, 5, 2**53 + 1,
                 1e308, "1", None, Decimal("1e-400"), Decimal("-0"), Decimal("0.1"),
                 Decimal("1e15"), Decimal("1.0000000000000001e15"), Decimal("sNaN"),
                 Decimal("-Infinity"), 0, 0.0, *EDGE_QUANTITIES],
    "timestamp": [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1971, 1, 1, tzinfo=UTC),
        datetime(2260, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2261, 1, 1, tzinfo=UTC),
        datetime(2262, 5, 1, tzinfo=UTC),
        datetime(2026, 3, 1, 12),
        datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=5, minutes=45))),
        datetime(2024, 2, 29, 23, 59, 59, 1, tzinfo=UTC),
        datetime(1970, 1, 1, 5, 44, tzinfo=timezone(timedelta(hours=5, minutes=45))),
        datetime(2262, 1, 1, 5, 44, tzinfo=timezone(timedelta(hours=5, minutes=45))),
        datetime(2026, 3, 1, 12, tzinfo=_NoOffset()),
        "2026-03-01T00:00:00Z",
        None,
    ],
    "metadata": [None, {}, {"a": 1}, "text", [1]],
    "source": ["api", "", "a\n", 5, None],
    "quantiy": [1],
    "metric_key": ["tokens", None],
    "orgId": ["acme", None, ""],
}  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"), [(field, value) for field, values in EDGES.items() for value in values]
)
@pytest.mark.parametrize("metric", ["api_calls", "tokens", "cents", "whole", "rounded"])
def test_edge_values_after_a_good_record_give_the_same(
    field: str, value: Any, metric: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = {"metricKey": metric, "subjectType": "org", "subjectId": "org-1"}
    items = [{**base, "quantity": 1.0}, {**base, field: value}]
    _same_on_all_paths(monkeypatch, items)


def _comparable(result: list[RecordRow] | tuple[str, str]) -> Any:
    if isinstance(result, tuple):
        return result
    # every row is a RecordRow, its quantity an int (units) that matches Python's decimal
    assert all(type(row) is RecordRow for row in result)
    assert all(type(row.quantity) is int and abs(row.quantity) < 2**63 for row in result)
    return [(*row[:5], type(row[5]), row[5], *row[6:]) for row in result]


def _by_decimal(value: Any, precision: int, rounding: Rounding | None) -> int | None:
    """The units of ``value`` computed here with Python's ``decimal`` alone: None where the
    value is refused (not a finite number, too many places without a rounding, beyond 64
    bits)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    text = repr(value) if isinstance(value, float) else str(value).strip()
    if "_" in text or len(text) > 64:
        return None
    try:
        number = Decimal(text)
        if not number.is_finite():
            return None
        scaled = number.scaleb(precision, Context(prec=200))
        whole = scaled.to_integral_value(ROUND_DOWN)
        if whole != scaled:
            if rounding is None:
                return None
            whole = scaled.to_integral_value(rounding.mode)
    except ArithmeticError:
        return None
    return int(whole) if abs(whole) <= 2**63 - 1 else None


def _check_units(items: list[Any], result: list[RecordRow] | tuple[str, str]) -> None:
    """Each stored row's units are what ``decimal`` makes of its record's quantity."""
    if isinstance(result, tuple):
        return
    for item, row in zip(items, result, strict=True):
        precision, rounding = PRECISIONS[row.metric_key]
        given = item.get("quantity")
        expected = 10**precision if given is None else _by_decimal(given, precision, rounding)
        assert row.quantity == expected, (given, row)


def test_intake_takes_the_fast_path_for_plain_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain records do not reach the Python loop on the msgspec path: the one name checked
    again is the metric key, once per call where its metric is resolved."""
    monkeypatch.setattr(intake_module, "compiled_path", False)
    intake = Intake(_resolver)
    base = {"metricKey": "api_calls", "subjectType": "org", "subjectId": "org-1"}
    intake.rows([base])
    calls: list[str] = []
    monkeypatch.setattr(intake, "_name", lambda field, value: calls.append(field) or value)
    at = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    monkeypatch.setattr(intake, "_loop", None)  # calling it would fail the test
    rows = intake.rows([{**base, "id": f"r{i}", "quantity": i, "timestamp": at} for i in range(5)])
    assert calls == ["metricKey"]
    assert rows[3] == RecordRow("r3", "api_calls", "org", "org-1", None, 3_000_000,
                                1772368215123456000, None, None)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RFC3339_TEXTS, min_size=1, max_size=40))
def test_times_given_as_strings_give_the_same(texts: list[str]) -> None:
    """Batches whose times are strings, every one in the plain form or not, give on every
    path what the loop gives (the msgspec path parses the plain ones itself)."""
    items = [{"metricKey": "tokens", "subjectType": "org", "subjectId": "org-1", "id": f"t{i}",
              "quantity": 1.5, "timestamp": text} for i, text in enumerate(texts)]  # fmt: skip
    with pytest.MonkeyPatch.context() as monkeypatch:
        _same_on_all_paths(monkeypatch, items)


def test_plain_string_times_take_the_msgspec_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Times in the plain RFC 3339 form do not send a batch to the Python loop."""
    monkeypatch.setattr(intake_module, "compiled_path", False)
    intake = Intake(_resolver)
    monkeypatch.setattr(intake, "_loop", None)  # calling it would fail the test
    rows = intake.rows([
        {"metricKey": "tokens", "subjectType": "org", "subjectId": "org-1", "id": f"s{i}",
         "quantity": 2.0, "timestamp": text}
        for i, text in enumerate(["2026-03-01T12:30:15.123456Z", "2026-03-01T18:15:15+05:45",
                                  "2026-03-01T12:30:15.5-00:00"])
    ])  # fmt: skip
    assert [row.ts for row in rows] == [1772368215123456000, 1772368215000000000,
                                        1772368215500000000]  # fmt: skip


@needs_compiled
def test_intake_takes_the_compiled_path_for_plain_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain records do not reach the Python loop on the compiled path, but for the first of
    each metric, which resolves the metric there (once per call)."""
    intake = Intake(_resolver)
    base = {"metricKey": "api_calls", "subjectType": "org", "subjectId": "org-1"}
    intake.rows([base])
    calls: list[str] = []
    monkeypatch.setattr(intake, "_name", lambda field, value: calls.append(field) or value)
    native = intake_module.compiled
    assert native is not None
    stops: list[tuple[int, int]] = []

    def rows_fast(items: list[Any], start: int, *rest: Any) -> int:
        stops.append((start, native.rows_fast(items, start, *rest)))
        return stops[-1][1]

    monkeypatch.setattr(intake_module, "compiled", type("C", (), {"rows_fast": rows_fast}))
    monkeypatch.setattr(intake, "_plain", None)  # calling the msgspec path would fail the test
    at = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    rows = intake.rows([{**base, "id": f"r{i}", "quantity": i, "timestamp": at} for i in range(5)])
    assert calls == ["metricKey"]
    assert stops == [(0, 0), (1, 5)]  # the first record resolves its metric in the loop
    assert rows[3] == RecordRow("r3", "api_calls", "org", "org-1", None, 3_000_000,
                                1772368215123456000, None, None)  # fmt: skip


@needs_compiled
def test_records_without_ids_stay_on_the_compiled_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records without an id take fresh ids on the compiled path: it stops once for want of
    ids (they are drawn, at most 4,096 at a time) and goes on, never giving the records to
    msgspec or the loop; the ids are fresh, distinct and in order."""
    intake = Intake(_resolver)
    base = {"metricKey": "api_calls", "subjectType": "org", "subjectId": "org-1"}
    intake.rows([base])
    native = intake_module.compiled
    assert native is not None
    stops: list[tuple[int, int]] = []

    def rows_fast(items: list[Any], start: int, *rest: Any) -> int:
        stops.append((start, native.rows_fast(items, start, *rest)))
        return stops[-1][1]

    monkeypatch.setattr(intake_module, "compiled", type("C", (), {"rows_fast": rows_fast}))
    monkeypatch.setattr(intake, "_plain", None)  # calling the msgspec path would fail the test
    rows = intake.rows([{**base, "quantity": 0.5} for _ in range(5_000)])
    assert stops == [(0, 0), (0, 0), (1, 4096), (4096, 5_000)]  # no ids; its metric; no ids
    ids = [row.id for row in rows]
    assert len(set(ids)) == 5_000 and ids == sorted(ids)
    assert {row.quantity for row in rows} == {500_000}


@needs_compiled
def test_a_column_of_quantities_converts_as_to_units_does() -> None:
    """The compiled conversion of a column gives what to_units gives for floats and ints
    that fit, and gives the column back (None) where one value needs the Python path."""
    native = intake_module.compiled
    assert native is not None
    values: list[Any] = [0.1, 2.5, -3.25, 7, -(2**40), 1e-6, 123456.789012, 0.0, -0.0]
    for precision in (0, 3, 6, 12):
        fits = [v for v in values if _fits(v, precision)]
        want = [int(Decimal(repr(v)).scaleb(precision)) for v in fits]
        assert native.units_column(fits, 10**precision) == want
    for odd in (0.1 + 0.2, float("nan"), float("inf"), "1", Decimal(1), True, 2**63, 1e300):
        assert native.units_column([1.0, odd], 10**6) is None


def _fits(value: float | int, precision: int) -> bool:
    exact = Decimal(repr(value)).scaleb(precision)
    return exact == exact.to_integral_value() and abs(exact) < 2**53


@needs_compiled
def test_rows_of_plain_values_are_left_to_reference_counting() -> None:
    """Rows the compiled path makes hold only strings, numbers and None: they cannot be part
    of a cycle, so the cyclic collector never walks them (otherwise every collection would
    walk every row a large batch keeps alive)."""
    intake = Intake(_resolver)
    base = {"metricKey": "api_calls", "subjectType": "org", "subjectId": "org-1"}
    rows = intake.rows([{**base, "id": f"r{i}", "quantity": i, "source": "s"} for i in range(50)])
    assert len(rows) == 50 and rows[7].quantity == 7_000_000
    assert not any(gc.is_tracked(row) for row in rows[1:])  # the first took the Python path


@needs_compiled
def test_a_row_type_with_fields_of_its_own_is_refused() -> None:
    class Wide(tuple):  # type: ignore[type-arg]
        pass  # instances have a __dict__

    native = intake_module.compiled
    assert native is not None
    for row_type in (Wide, dict):
        with pytest.raises(TypeError, match="plain tuple subclass"):
            native.rows_fast([], 0, [], set(), {}, [], 0, UTC, 256, row_type)


class Sly(str):
    """A string that runs Python code when compared: never cached for the fast path."""

    calls = 0

    def __eq__(self, other: object) -> bool:
        Sly.calls += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_str_subclasses_give_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names that are str subclasses are validated each time and never enter the name cache
    (their comparisons could run arbitrary code); every path keeps them as given."""
    items: list[Any] = [
        {"metricKey": Sly("tokens"), "subjectType": Sly("org"), "subjectId": Sly("o1"),
         "quantity": 2.0, "orgId": Sly("acme")},
        {"metricKey": "tokens", "subjectType": "org", "subjectId": "o1", "quantity": 3.0,
         "orgId": "acme"},
    ]  # fmt: skip
    for path in PATHS:
        rows = _run_intake(monkeypatch, items, path)
        assert [type(v) for v in rows[0][1:4]] == [Sly, Sly, Sly], path  # type: ignore[index]
    _same_on_all_paths(monkeypatch, items)


@pytest.mark.parametrize("bad_at", [0, 5, intake_module.CHUNK - 1, intake_module.CHUNK,
                                    2 * intake_module.CHUNK + 7])  # fmt: skip
def test_a_bad_record_in_a_later_chunk_is_named_by_its_index(
    bad_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = {"metricKey": "tokens", "subjectType": "org", "subjectId": "org-1", "quantity": 1.0}
    items: list[Any] = [dict(base) for _ in range(3 * intake_module.CHUNK)]
    items[bad_at] = {**base, "quantity": "1.0000001"}
    assert _same_on_all_paths(monkeypatch, items) == (
        "ValidationError",
        f"records[{bad_at}].quantity: has 7 decimal places, the metric keeps 6 (got 1.0000001);"
        " round it, or declare the metric's rounding",
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(PLAIN, RECORDS), min_size=1, max_size=6), st.integers(1, 4),
    st.integers(0, 3),
)  # fmt: skip
def test_chunks_of_any_size_give_the_same(items: list[Any], chunk: int, stuck: int) -> None:
    """Records alike and records that differ (one spelling or the other, fields given or not)
    split across chunks, and handed from the compiled path to the others after any number of
    records it gives back: the same rows, the same fresh ids, the same first error."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        python = _run_intake(monkeypatch, items, "python")
        monkeypatch.setattr(intake_module, "CHUNK", chunk)
        monkeypatch.setattr(intake_module, "STUCK", stuck)
        for path in PATHS:
            assert _comparable(_run_intake(monkeypatch, items, path)) == _comparable(python)


@pytest.mark.parametrize("bad_at", [None, 3, 20, 40, 2 * intake_module.CHUNK + 30])
def test_records_the_compiled_path_gives_back_go_a_chunk_at_a_time(
    bad_at: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records with metadata, which the compiled path never takes, after plain ones: the
    same rows or error on every path, and msgspec takes them once the compiled path has
    given back STUCK records in a row."""
    base = {"metricKey": "tokens", "subjectType": "org", "subjectId": "org-1", "quantity": 1.0}
    items: list[Any] = [dict(base) for _ in range(10)]
    items += [{**base, "metadata": {"i": i}} for i in range(3 * intake_module.CHUNK)]
    items += [dict(base) for _ in range(10)]
    if bad_at is not None:
        items[bad_at] = {**base, "quantity": "one"}
    result = _same_on_all_paths(monkeypatch, items)
    if bad_at is None:
        assert len(result) == len(items) and result[-11].metadata == '{"i":6143}'  # type: ignore[union-attr]
    else:
        assert result == (
            "ValidationError",
            f"records[{bad_at}].quantity: must be a decimal number, got 'one'",
        )
    if intake_module.compiled is not None and bad_at is None:
        plain = Intake._plain
        chunks: list[int] = []

        def counted(self: Intake, chunk: list[Any], *rest: Any) -> Any:
            chunks.append(len(chunk))
            return plain(self, chunk, *rest)

        monkeypatch.setattr(Intake, "_plain", counted)
        _run_intake(monkeypatch, items, "compiled")
        assert sum(chunks) > 2 * intake_module.CHUNK  # all but STUCK or so after each chunk


def test_snake_case_and_mixed_batches_give_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    camel = {"metricKey": "tokens", "subjectType": "org", "subjectId": "o1", "quantity": 2,
             "orgId": "acme", "source": "api"}  # fmt: skip
    snake = {"metric_key": "tokens", "subject_type": "org", "subject_id": "o1", "quantity": 2,
             "org_id": "acme", "source": "api"}  # fmt: skip
    for items in (
        [snake, snake],
        [camel, snake],
        [snake, camel],
        [{**camel, **snake}],
        [{**camel, "org_id": "other"}],
        [camel, {**camel, "metadata": {"a": 1}}],
    ):
        _same_on_all_paths(monkeypatch, items)


def test_a_call_makes_only_the_ids_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids are made for the records of the call that have none, not thousands ahead (a
    ``record()`` without an id made 4,096 and kept one)."""
    asked: list[int] = []

    def counting(count: int) -> list[str]:
        asked.append(count)
        return _ids(count)

    monkeypatch.setattr(intake_module, "new_ids", counting)
    for path in PATHS:
        monkeypatch.setattr(intake_module, "compiled_path", path == "compiled")
        monkeypatch.setattr(intake_module, "fast_path", path != "python")
        intake = Intake(_resolver)
        base = {"metricKey": "api_calls", "subjectType": "org", "subjectId": "org-1"}
        asked.clear()
        intake.rows([base])
        assert sum(asked) == 1, path
        asked.clear()
        rows = intake.rows([base] * 10 + [{**base, "id": "given"}] + [base] * 5)
        assert 15 <= sum(asked) <= 16, path  # at most one per record of the call
        assert len({row.id for row in rows}) == 16


# -- exact units -------------------------------------------------------------------------------

EXACT_CASES: list[tuple[str, Any, str | None]] = [
    # (metric, quantity given, the value in decimal: None where it is refused)
    ("tokens", 0.1, "0.1"),
    ("tokens", -0.1, "-0.1"),
    ("tokens", "0.1", "0.1"),
    ("tokens", Decimal("0.1"), "0.1"),
    ("tokens", 0.3, "0.3"),
    ("tokens", 0.1 + 0.2, None),  # 0.30000000000000004: 17 places
    ("tokens", 123456.789012, "123456.789012"),
    ("tokens", -0.000001, "-0.000001"),
    ("tokens", 1e-7, None),
    ("tokens", "1.2345678", None),
    ("tokens", 9223372036854, "9223372036854"),
    ("tokens", 9223372036855, None),
    ("tokens", "9223372036854.775807", "9223372036854.775807"),
    ("tokens", "-9223372036854.775807", "-9223372036854.775807"),
    ("tokens", "9223372036854.775808", None),
    ("tokens", "-9223372036854.775808", None),
    ("cents", 19.99, "19.99"),
    ("cents", -19.99, "-19.99"),
    ("cents", 0.01, "0.01"),
    ("cents", 1234567.89, "1234567.89"),
    ("cents", 0.125, None),
    ("cents", "0.10", "0.10"),
    ("cents", 92233720368547758, "92233720368547758"),
    ("cents", 92233720368547759, None),
    ("rounded", 0.125, "0.12"),  # half to even
    ("rounded", 0.135, "0.14"),
    ("rounded", -0.125, "-0.12"),
    ("rounded", "2.675", "2.68"),
    ("rounded", 2.675, "2.68"),  # by its shortest repr, not by its binary value 2.67499...
    ("whole", 9223372036854775807, "9223372036854775807"),
    ("whole", -9223372036854775807, "-9223372036854775807"),
    ("whole", 9223372036854775808, None),
    ("whole", -9223372036854775808, None),
    ("whole", 2**53 + 1, str(2**53 + 1)),
    ("whole", 0.5, None),
    ("whole", None, "1"),  # a COUNT metric's record without a quantity counts 1
    ("api_calls", None, "1"),
]


@pytest.mark.parametrize(("metric", "quantity", "value"), EXACT_CASES)
def test_quantities_become_exact_units(
    metric: str, quantity: Any, value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each path stores value × 10**precision as Python's decimal computes it, or refuses the
    record naming ``records[1].quantity``, also after good records of the metric (on the
    compiled path's own ground)."""
    base = {"metricKey": metric, "subjectType": "org", "subjectId": "org-1"}
    item = dict(base) if quantity is None else {**base, "quantity": quantity}
    result = _same_on_all_paths(monkeypatch, [{**base, "quantity": 1}, item, item])
    if value is None:
        assert isinstance(result, tuple) and result[1].startswith("records[1].quantity: ")
        return
    assert not isinstance(result, tuple), result
    scale = Decimal(10) ** PRECISIONS[metric][0]
    units = int(Decimal(value) * scale)
    assert [row.quantity for row in result] == [int(scale), units, units]


@needs_compiled
def test_the_compiled_path_converts_ints_and_floats_that_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Floats whose shortest repr has at most the metric's places and ints within 64 bits stay
    on the compiled path; a str, a Decimal or a value to be rounded stops it at that record
    (the loop converts it) and it takes the records after."""
    native = intake_module.compiled
    assert native is not None
    stops: list[tuple[int, int]] = []

    def rows_fast(items: list[Any], start: int, *rest: Any) -> int:
        stops.append((start, native.rows_fast(items, start, *rest)))
        return stops[-1][1]

    monkeypatch.setattr(intake_module, "compiled", type("C", (), {"rows_fast": rows_fast}))
    intake = Intake(_resolver)
    values = [0.1, -0.1, 19.99, 123456.789012, -0.000001, 9223372036854, -9223372036854, 2**40]
    for metric in ("tokens", "rounded"):
        base = {"metricKey": metric, "subjectType": "org", "subjectId": "org-1"}
        intake.rows([base | {"quantity": 1}])
        stops.clear()
        good = [base | {"id": f"v{i}", "quantity": value} for i, value in enumerate(values)
                if metric == "tokens" or round(value, 2) == value]  # fmt: skip
        rows = intake.rows(good)
        assert stops == [(0, 0), (1, len(good))]
        precision = PRECISIONS[metric][0]
        assert [row.quantity for row in rows] == [
            int(Decimal(repr(item["quantity"])).scaleb(precision)) for item in good
        ]
    base = {"metricKey": "rounded", "subjectType": "org", "subjectId": "org-1"}
    for odd in ("0.1", Decimal("0.1"), 0.125, 2**63, 1e300, math.nan):
        stops.clear()
        try:
            rows = intake.rows(
                [
                    base | {"id": "a", "quantity": 1},
                    base | {"id": "b", "quantity": odd},
                    base | {"id": "c", "quantity": 2},
                ]
            )
        except ValidationError:
            assert odd in (2**63, 1e300) or odd != odd
        else:
            assert [row.quantity for row in rows][:2] == [100, 10 if odd != 0.125 else 12]
        assert stops[:2] == [(0, 0), (1, 1)], odd  # the first resolves the metric in the loop
