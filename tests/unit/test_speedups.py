"""The compiled fast paths (src/tsmeter/_speedups.c) give what the Python code gives.

Each test runs the same input through the Python reference (``native`` set to None in the
module that uses it) and through the compiled path, and compares rows, bytes, errors and
ledger contents. Under CI the extension must be built: otherwise the suite would pass on
the Python code alone and the compiled code would go untested.
"""

from __future__ import annotations

import gc
import marshal
import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsmeter import speedups
from tsmeter.adapters.influxdb import ledger as ledger_module
from tsmeter.adapters.influxdb import lineprotocol, placement, v1
from tsmeter.adapters.influxdb.ledger import IdLedger
from tsmeter.adapters.influxdb.lineprotocol import UsageEncoder
from tsmeter.domain import RecordRow
from tsmeter.errors import StorageUnavailableError
from tsmeter.outbox import batches as outbox_batches

native = speedups.native
needs_native = pytest.mark.skipif(native is None, reason="tsmeter._speedups is not built")
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
              st.just("o"), st.sampled_from([None, "acme", "x"]), st.just(1.0),
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
                  st.just("o"), st.sampled_from([None, "acme", ""]), st.just(1.0),
                  st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1),
                            st.integers(min_value=-3 * DAY, max_value=3 * DAY)),
                  st.none(), st.none()),
        max_size=40,
    ),
    st.integers(min_value=0, max_value=300),
)  # fmt: skip
def test_existence_read_days_are_the_same(rows: list[RecordRow], spread: int) -> None:
    """Per UTC day: first and last time and (metric, org) pairs, negative times included;
    rows over more than 256 days are handed to the Python code."""
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
        (min(r.ts for r in group), max(r.ts for r in group),
         sorted({(r.metric_key, r.org_id or "") for r in group}))
        for group in expected.values()
    )  # fmt: skip
    assert native is not None
    assert (native.span_bounds(rows, DAY) is None) == (len(expected) > 256)


OUTBOX_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=3),
    st.sampled_from(["\ud800", "api_calls", "é🙂\x00", -0.0]),
)


def _both_unpack(blob: bytes) -> tuple[list[RecordRow], list[RecordRow]]:
    compiled = outbox_batches.unpack(blob)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(outbox_batches, "native", None)
        python = outbox_batches.unpack(blob)
    return compiled, python


def _exactly(rows: list[Any]) -> list[tuple[Any, ...]]:
    """Rows compared value, type and sign (NaN is not equal to itself, -0.0 is to 0.0)."""
    return [tuple((repr(v), type(v)) for v in row) for row in rows]


@needs_native
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[OUTBOX_VALUES] * 9), max_size=20))
def test_outbox_batches_unpack_the_same(values: list[tuple[Any, ...]]) -> None:
    """A stored outbox batch becomes the rows it was made of, on both paths: the compact
    format the compiled path writes (also repeating the row before, which it stores as
    "the same"), and the general one it falls back to for booleans, ints beyond 64 bits
    and unencodable strings; the compiled rows are left to reference counting."""
    rows = [RecordRow(*v) for v in values]
    rows += rows[-1:] * 2
    for path in (native, None):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(outbox_batches, "native", path)
            blob = outbox_batches.pack(rows)
        compiled, python = _both_unpack(blob)
        assert _exactly(compiled) == _exactly(python) == _exactly(rows)
        assert [type(r) for r in compiled] == [RecordRow] * len(rows)
        assert not any(gc.is_tracked(r) for r in compiled)
    plain = all(
        v is None or type(v) in (str, float) or (type(v) is int and -(2**63) <= v < 2**63)
        for row in values
        for v in row
    ) and not any(isinstance(v, str) and "\ud800" in v for row in values for v in row)
    assert (outbox_batches.pack(rows)[0] == 2) == plain


@needs_native
def test_damaged_outbox_batches_are_refused_on_both_paths() -> None:
    """Every cut-short copy of a batch, an unknown tag, a first row that says "the same",
    rows of another width and bytes after the last row are refused with a clear error."""
    row = RecordRow("r1", "api_calls", "org", "é", None, 1.5, -7, '{"a": 1}', None)
    blob = outbox_batches.pack([row, row._replace(id="r2")])
    assert blob[0] == 2 and _both_unpack(blob) == ([row, row._replace(id="r2")],) * 2
    width_at, first_tag = 5, 6
    damaged = [blob[:n] for n in range(1, len(blob))]
    damaged += [
        blob[:first_tag] + b"\x09" + blob[first_tag + 1 :],
        blob[:first_tag] + b"\x01" + blob[first_tag + 1 :],
        blob[:width_at] + b"\x08" + blob[width_at + 1 :],
        blob + b"\x00",
    ]
    for bad in damaged:
        for path in (native, None):
            with pytest.MonkeyPatch.context() as patch, pytest.raises(StorageUnavailableError):
                patch.setattr(outbox_batches, "native", path)
                outbox_batches.unpack(bad)
    wide = bytes([1]) + marshal.dumps([(1,) * 10])
    for path in (native, None):
        with pytest.MonkeyPatch.context() as patch, pytest.raises(StorageUnavailableError):
            patch.setattr(outbox_batches, "native", path)
            outbox_batches.unpack(wide)


ROWS = st.lists(
    st.builds(
        RecordRow,
        st.text(alphabet='ab"\\ ,=🙂', min_size=1, max_size=4),
        st.sampled_from(["api_calls", "a b,c=d\\"]),
        st.just("org"),
        st.sampled_from(["o1", "o\\", "⧵x"]),
        st.sampled_from([None, "acme"]),
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.sampled_from([-0.0, 0.0, 1e16, -1e16, 9999999999999998.0, 5e-324, 1.5]),
            st.integers(min_value=-(2**53), max_value=2**53).map(float),
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


def _ledger_rows(
    rows: list[RecordRow],
    compiled: bool,
    path: str,
    near: int,
    per: int = 150,
    clustered: int = IdLedger.CLUSTERED,
) -> Iterator[tuple[Any, ...]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(ledger_module, "native", native if compiled else None)
        if not compiled:
            monkeypatch.setattr(ledger_module, "ledger_writes", None)
        monkeypatch.setattr(IdLedger, "NEAR", near)
        monkeypatch.setattr(IdLedger, "CLUSTERED", clustered)
        ledger = IdLedger(path, "http://x/db")
        assert (ledger._direct is not None) == (compiled and speedups.ledger_writes is not None)
        try:
            for start in range(0, len(rows), per):
                ledger.add(rows[start : start + per])
            yield from ledger._conn.execute(  # the index's entries, then the log's in order
                "SELECT 0, i.id, s.metric_key, s.subject_type, s.subject_id, s.org_key, i.ts"
                " FROM influx_ids i JOIN influx_series s USING (series_no) UNION ALL"
                " SELECT l.seq, l.id, s.metric_key, s.subject_type, s.subject_id, s.org_key, l.ts"
                " FROM influx_ids_log l JOIN influx_series s USING (series_no) ORDER BY 1, 2"
            )
            series = {number: key for number, *key in ledger._conn.execute(
                "SELECT series_no, metric_key, subject_type, subject_id, org_key"
                " FROM influx_series")}  # fmt: skip
            for name, entries in ledger._conn.execute(  # then each block's, in order
                "SELECT block, entries FROM influx_id_blocks ORDER BY block"
            ):
                for size, tail, number, ts in ledger_module._ENTRY.iter_unpack(entries):
                    yield ("block", name + tail[:size].decode(), *series[number], ts)
        finally:
            ledger.close()


@needs_native
@pytest.mark.parametrize("clustered", [IdLedger.CLUSTERED, 10**9])
@pytest.mark.parametrize(("near", "per"), [(0, 150), (2, 150), (2, 600)])
def test_ledger_entries_are_the_same(tmp_path: Any, near: int, per: int, clustered: int) -> None:
    """The same entries, in blocks, in the index and in the log (CLUSTERED 10**9: none to
    blocks; NEAR 0: then every add after the first goes to the log); adds of 600 take the
    compiled transaction's statements of 250 rows."""
    n, ids = (420, 230) if per == 150 else (1_300, 530)
    rows = [
        RecordRow(
            f"id-{i % ids:04}",
            "api_calls",
            "org",
            f"o{i % 7}",
            None if i % 3 else "acme",
            1.0,
            i,
            None,
            None,
        )
        for i in range(n)
    ]
    compiled = list(_ledger_rows(rows, True, str(tmp_path / "a.db"), near, per, clustered))
    python = list(_ledger_rows(rows, False, str(tmp_path / "b.db"), near, per, clustered))
    # the index holds each id once; the blocks and the log every entry
    assert len(compiled) == (ids if near and clustered > 4 else n)
    blocked = sum(entry[0] == "block" for entry in compiled)
    assert blocked == (n if clustered == 4 else 0)  # ids new to the index, 4+ per block
    assert compiled == python


@needs_native
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.lists(st.tuples(HOSTILE, st.integers(0, 5), st.integers(-(2**63), 2**63 - 1)),
                min_size=1, max_size=700),
       st.sampled_from([1, 249, 250, 600]))  # fmt: skip
def test_ledger_adds_without_the_interpreter_lock_are_the_same(
    tmp_path: Any, entries: list[tuple[str, int, int]], per: int
) -> None:
    """Adds written by the compiled transaction (``_ledgerwrite``, several statements of 250
    rows and single rows) leave the index as the Python code does: hostile and repeated ids
    (the last entry of an id wins), many series, lone surrogates handed back."""
    rows = [RecordRow(rid, "api_calls", "org", f"o{series}", None if series % 2 else "acme",
                      1.0, ts, None, None) for rid, series, ts in entries]  # fmt: skip
    found = []
    for compiled in (True, False):
        path = tmp_path / f"{compiled}-{secrets.token_hex(4)}.db"
        try:
            found.append(list(_ledger_rows(rows, compiled, str(path), 2, per)))
        except UnicodeEncodeError as exc:  # a lone surrogate: both paths refuse it
            found.append([repr(exc)])
    assert found[0] == found[1]


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
    row = RecordRow("a", "m", "org", "x", None, 1.0, 5_000, None, None)
    rows = [row, row._replace(id="b", subject_id=Sly("x")), row._replace(id="c", org_id=Sly("o")),
            row._replace(id="d", metric_key="n", subject_id=Sly("x"))]  # fmt: skip
    occupied = placement.Slots()
    times, overflow, moved = placement.place(rows, occupied, {})
    assert times == [5_000, 5_001, 5_000, 5_000] and overflow == [0, 0, 0, 0]
    assert moved == {(("m", "org", "x", None), 5_000)}


def test_ci_runs_the_compiled_paths() -> None:
    """CI has a compiler: there the tests marked needs_native must not all skip unseen."""
    if os.environ.get("CI") and os.environ.get("TSMETER_PURE_PYTHON", "") in ("", "0"):
        assert native is not None, "tsmeter._speedups is not built"
        assert speedups.ledger_writes is not None, "tsmeter._ledgerwrite is not in use"
