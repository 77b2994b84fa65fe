"""The read windows of an InfluxDB ``append``: cut from a list or from a stream of parts."""

from __future__ import annotations

import pytest

from tsmeter.adapters.influxdb.placement import CallIds, Slots, Windows, prune, unstored
from tsmeter.domain import RecordRow


def _rows(times: list[int], tag: str = "r") -> list[RecordRow]:
    return [RecordRow(f"{tag}{i}", "m", "org", "o", None, 1_000_000, ts, None, None)
            for i, ts in enumerate(times)]  # fmt: skip


@pytest.mark.parametrize("part", [1, 3, 7, 100, 1_000])
def test_windows_grow_fourfold_across_parts(part: int) -> None:
    """Windows of 2, 8, 32, then 40 rows, whatever the parts' sizes; every row once, in order."""
    rows = _rows(list(range(0, 200_000, 1_000)))
    stream = Windows((rows[i : i + part] for i in range(0, len(rows), part)), 2, 40)
    listed = Windows([rows], 2, 40)
    for windows in (stream, listed):
        cut = list(windows)
        assert [len(w) for w in cut] == [2, 8, 32, 40, 40, 40, 38]
        assert [r for w in cut for r in w] == rows
    assert list(Windows([], 2, 40)) == [] and list(Windows(iter([[], []]), 2, 40)) == []


def test_the_rest_of_a_list_is_known_and_of_a_stream_is_not() -> None:
    """``rest_low``: the first microsecond of the rows not cut yet, for a list; None for a
    stream until it has ended."""
    times = [5_000, 9_000, 1_500, 7_000, 3_999, 8_000, 6_000]
    listed = Windows([_rows(times)], 2, 2)
    assert listed.rest_low() == 1_000
    next(listed)
    assert listed.rest_low() == 1_000  # 1,500 is still ahead
    next(listed)
    assert listed.rest_low() == 3_000
    next(listed)
    assert listed.rest_low() == 6_000
    next(listed)
    assert listed.rest_low() == 2**63
    stream = Windows(iter([_rows(times)]), 2, 2)
    assert stream.rest_low() is None
    assert len(list(stream)) == 4
    assert stream.rest_low() == 2**63


def test_unstored_counts_the_first_of_a_repeated_id_and_skips_stored_ones() -> None:
    """A window's rows need a point unless their id was found stored (then it is remembered)
    or came earlier in the call."""
    seen = CallIds()
    seen.windows.append((0, {"r0"}))
    found = [({}, {"rid": "r2", "metric": "m", "subject_type": "org", "subject_id": "o",
                   "org": "", "time": 42})]  # fmt: skip
    window = [*_rows([1, 2, 3, 4]), _rows([5], "r")[0]._replace(id="r1")]  # r1 twice
    remembered: list[object] = []
    occupied = Slots()
    fresh = unstored(window, 1, found, seen, occupied,
                     lambda tags, values: remembered.append(values))  # fmt: skip
    assert [r.id for r in fresh] == ["r1", "r3"]
    assert [v["rid"] for v in remembered] == ["r2"]  # type: ignore[index]
    assert list(seen.windows) == [(0, {"r0"}), (1, {"r1", "r3"})] and seen.kept == {"r2"}
    assert occupied.taken(("m", "org", "o", None), "", 42)
    # the usual case: all new, the window itself comes back
    more = _rows([6, 7], "n")
    assert unstored(more, 2, [], seen, occupied, remembered.append) is more
    assert all(rid in seen for rid in ("r0", "r1", "r2", "r3", "n0", "n1")) and "r4" not in seen
    # forgetting the windows below 2 keeps what was found stored
    seen.forget(2)
    assert [rid for rid in ("r0", "r1", "r2", "r3", "n0") if rid in seen] == ["r2", "n0"]
    assert [
        r.id for r in unstored(_rows([8, 9, 10]), 3, [], seen, occupied, remembered.append)
    ] == ["r0", "r1"]


def test_unstored_finds_an_id_repeated_within_a_window_of_new_ids() -> None:
    """An id twice in a window of new ids: its first row counts; a later window repeating
    ids of this one gets only its new rows."""
    seen = CallIds()
    window = [*_rows([1, 2, 3]), _rows([4])[0]]  # r0 twice
    fresh = unstored(window, 0, [], seen, Slots(), lambda tags, values: None)
    assert fresh == window[:3]
    assert list(seen.windows) == [(0, {"r0", "r1", "r2"})]
    later = _rows([5, 6, 7])[1:] + _rows([8], "n")
    assert [r.id for r in unstored(later, 1, [], seen, Slots(), lambda t, v: None)] == ["n0"]


def test_prune_says_whether_it_forgot_a_slot() -> None:
    occupied, cursor = Slots(), {}
    key = ("m", "org", "o", None)
    occupied.take(key, "", 5_000, (None, *key))
    assert not prune(occupied, cursor, 5_000)
    assert prune(occupied, cursor, 5_001)
    assert list(occupied) == []
