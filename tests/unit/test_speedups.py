"""The InfluxDB adapter's compiled fast paths (src/tsmeter/adapters/influxdb/_speedups.c)
give what the Python code gives.

Each test runs the same input through the Python reference (``native`` set to None in the
module that uses it) and through the compiled path, and compares change-log hours, the
existence read's days, point placement and line-protocol bytes. Under CI the extension must
be built: otherwise the suite would pass on the Python code alone and the compiled code
would go untested.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsmeter.adapters.influxdb import lineprotocol, placement, speedups, v1
from tsmeter.adapters.influxdb.lineprotocol import UsageEncoder
from tsmeter.domain import RecordRow
from tsmeter.metering import intake

native = speedups.native
needs_native = pytest.mark.skipif(native is None, reason=speedups.describe())
DAY = 86_400_000_000_000

HOSTILE = st.text(
    alphabet=st.sampled_from([*"a Z0,= \"\\\n\t'=⧵é漢🙂\x00\x7f", "\ud800"]),
    min_size=0,
    max_size=12,
)


def test_the_extension_is_built_under_ci() -> None:
    if os.environ.get("CI") == "true":
        assert native is not None, speedups.describe()


@needs_native
@settings(max_examples=200, deadline=None)
@given(st.lists(
    st.builds(RecordRow, st.just("r"), st.sampled_from(["a", "b", "c"]), st.just("org"),
              st.just("o"), st.sampled_from([None, "acme", "x"]), st.just(1_000_000),
              st.integers(min_value=-(2**63), max_value=2**63 - 1), st.none(), st.none()),
    max_size=40,
))  # fmt: skip
def test_change_log_hours_are_the_same(rows: list[RecordRow]) -> None:
    """The (metric, org, UTC hour) set of the change log, negative times included."""
    compiled = placement.hours(rows)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(placement, "native", None)
        python = placement.hours(rows)
    assert compiled == python
    assert compiled == {(r.metric_key, r.org_id, r.ts // 3_600_000_000_000) for r in rows}


@needs_native
@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.builds(RecordRow, st.just("r"), st.sampled_from(["a", "b"]), st.just("org"),
                  st.just("o"), st.sampled_from([None, "acme", ""]), st.just(1_000_000),
                  st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1),
                            st.integers(min_value=-3 * DAY, max_value=3 * DAY)),
                  st.none(), st.none()),
        max_size=40,
    ),
    st.integers(min_value=0, max_value=300),
)  # fmt: skip
def test_existence_read_days_are_the_same(rows: list[RecordRow], spread: int) -> None:
    """Per UTC day: the day, first and last time and (metric, org) pairs, negative times
    included; rows over more than 256 days are handed to the Python code."""
    rows = rows + [rows[-1]._replace(ts=k * DAY + 7) for k in range(spread)] if rows else rows
    compiled = v1._days(rows)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(v1, "native", None)
        python = v1._days(rows)
    assert sorted(compiled) == sorted(python)
    expected: dict[int, list[RecordRow]] = {}
    for row in rows:
        expected.setdefault(row.ts // DAY, []).append(row)
    assert sorted(python) == sorted(
        (day, min(r.ts for r in group), max(r.ts for r in group),
         sorted({(r.metric_key, r.org_id or "") for r in group}))
        for day, group in expected.items()
    )  # fmt: skip
    assert native is not None
    assert (native.span_bounds(rows, DAY) is None) == (len(expected) > 256)


ROWS = st.lists(
    st.builds(
        RecordRow,
        st.text(alphabet='ab"\\ ,=🙂', min_size=1, max_size=4),
        st.sampled_from(["api_calls", "a b,c=d\\"]),
        st.just("org"),
        st.sampled_from(["o1", "o\\", "⧵x"]),
        st.sampled_from([None, "acme"]),
        st.one_of(
            st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1),
            st.sampled_from([0, -1, 1, 2**63 - 1, -(2**63) + 1, -(2**63), 10**18, 2**53 + 1]),
        ),
        st.sampled_from([0, 1, 999, 1_000, 1_001, 2**62, -5]),
        st.one_of(st.none(), st.text(alphabet='{}"\\a\n', max_size=6)),
        st.one_of(st.none(), st.text(alphabet='"\\ab', max_size=4)),
    ),
    max_size=30,
)


@needs_native
@settings(max_examples=300, deadline=None)
@given(ROWS, st.booleans())
def test_encoded_lines_are_the_same(rows: list[RecordRow], moved: bool) -> None:
    times = [r.ts + 7 for r in rows] if moved else None
    overflow = [i % 3 for i in range(len(rows))] if moved else None
    with pytest.MonkeyPatch.context() as monkeypatch:
        compiled = UsageEncoder("usage", writer="w 1").encode(rows, times, overflow)
        monkeypatch.setattr(lineprotocol, "native", None)
        python = UsageEncoder("usage", writer="w 1").encode(rows, times, overflow)
    assert compiled == python


@needs_native
@pytest.mark.parametrize("bad", [1.0, -0.0, 2.5, "7", None, True])
def test_encoders_refuse_units_that_are_not_ints(bad: object) -> None:
    """Both encoders refuse a row whose units are not an int, with the same error."""
    row = RecordRow("a", "m", "org", "x", None, bad, 5_000, None, None)  # type: ignore[arg-type]
    errors = []
    for code in (native, None):
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setattr(lineprotocol, "native", code)
            with pytest.raises(TypeError) as caught:
                UsageEncoder().encode([row])
            errors.append(str(caught.value))
    assert errors[0] == errors[1] == f"encode: a record's units must be an int, got {bad!r}"


@needs_native
@settings(max_examples=300, deadline=None)
@given(ROWS, st.lists(st.sampled_from([0, 1, 999, 1_000]), max_size=6))
def test_placement_is_the_same(rows: list[RecordRow], taken: list[int]) -> None:
    """Both paths give the same times, overflow tags, moves and slots, and no two points
    (nor a point and a slot taken before) share series, tag and time."""
    stored = ("api_calls", "org", "o1", None)

    def place() -> tuple[Any, ...]:
        occupied = placement.Slots()
        for i, ts in enumerate(taken):
            occupied.take(stored, "" if i % 3 else "1", ts, (None, *stored))
        cursor: dict[Any, int] = {}
        first = placement.place(rows, occupied, cursor)
        second = placement.place(rows, occupied, cursor)  # all taken now: everything moves
        return first, second, sorted(occupied, key=repr), cursor

    with pytest.MonkeyPatch.context() as monkeypatch:
        compiled = place()
        monkeypatch.setattr(placement, "native", None)
        python = place()
    assert compiled == python
    before = {(stored, "" if i % 3 else "1", ts) for i, ts in enumerate(taken)}
    points = [
        ((r.metric_key, r.subject_type, r.subject_id, r.org_id), str(c) if c else "", t)
        for placed in compiled[:2]
        for r, t, c in zip(rows, placed[0], placed[1], strict=True)
    ]
    assert len(set(points)) == len(points) and not before & set(points)
    assert set(compiled[2]) == before | set(points)


class Sly(str):
    """A string that runs Python code when compared: never cached for the fast path."""

    calls = 0

    def __eq__(self, other: object) -> bool:
        Sly.calls += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


@needs_native
def test_placement_compares_str_subclasses_in_python() -> None:
    """A row whose series strings are str subclasses is placed by the Python code (their
    comparison could run arbitrary code): equal series still never share a time."""
    row = RecordRow("a", "m", "org", "x", None, 1_000_000, 5_000, None, None)
    rows = [row, row._replace(id="b", subject_id=Sly("x")), row._replace(id="c", org_id=Sly("o")),
            row._replace(id="d", metric_key="n", subject_id=Sly("x"))]  # fmt: skip
    occupied = placement.Slots()
    times, overflow, moved = placement.place(rows, occupied, {})
    assert times == [5_000, 5_001, 5_000, 5_000] and overflow == [0, 0, 0, 0]
    assert moved == {(("m", "org", "x", None), 5_000)}


def test_ci_runs_the_compiled_paths() -> None:
    """CI has a compiler: there the tests marked needs_native must not all skip unseen."""
    if os.environ.get("CI") and os.environ.get("TSMETER_PURE_PYTHON", "") in ("", "0"):
        assert native is not None, speedups.describe()
        assert intake.compiled is not None, intake.describe()


DIMENSION_VALUE = st.one_of(
    st.text(alphabet='a ,="\\⧵é🙂\n', min_size=0, max_size=6),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.just([1]),
)
ROWS_WITH_DIMENSIONS = st.lists(
    st.builds(
        RecordRow,
        st.text(alphabet="ab", min_size=1, max_size=3),
        st.sampled_from(["tokens", "plain"]),
        st.just("org"),
        st.sampled_from(["o1", "o,2"]),
        st.sampled_from([None, "acme"]),
        st.integers(min_value=0, max_value=10**6),
        st.sampled_from([0, 999, 1_000]),
        st.one_of(
            st.none(),
            st.just("not json"),
            st.fixed_dictionaries({}, optional={"model": DIMENSION_VALUE,
                                                "region": DIMENSION_VALUE}).map(json.dumps),
        ),
        st.none(),
    ),
    max_size=30,
)  # fmt: skip


@needs_native
@settings(max_examples=300, deadline=None)
@given(ROWS_WITH_DIMENSIONS, st.booleans())
def test_encoded_lines_with_dimensions_are_the_same(rows: list[RecordRow], moved: bool) -> None:
    """Rows of a metric with dimensions take the Python prefix from the compiled path too: the
    bytes are the same, twice over (the second encode meets the caches)."""
    times = [r.ts + 7 for r in rows] if moved else None
    overflow = [i % 3 for i in range(len(rows))] if moved else None
    out = []
    for code in (native, None):
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setattr(lineprotocol, "native", code)
            encoder = UsageEncoder("usage", writer="w 1")
            encoder.know("tokens", None, ("model", "region"))
            encoder.know("tokens", "acme", ("region",))
            out.append([encoder.encode(rows, times, overflow) for _ in range(2)])
    assert out[0] == out[1]
    assert out[0][0] == out[0][1]
