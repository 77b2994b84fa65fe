"""The roll-up ledger of processed change-log entries: membership, counts, settling, and
its storage in string fields (the InfluxDB side is in tests/integration)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tsmeter.adapters.influxdb import changelog
from tsmeter.adapters.influxdb.changelog import Ledger
from tsmeter.adapters.influxdb.store import InfluxStore

A = ("api_calls", "", "w1")
B = ("to,k=ens", 'o "1"\n⧵', "h\\2")


def test_the_settle_time_covers_skew_and_writes_in_flight() -> None:
    """A write lands within the store's in-flight time; clocks differ by the skew."""
    assert changelog.SETTLE >= InfluxStore.IN_FLIGHT_S * 1e9 + changelog.CLOCK_SKEW


def test_membership_and_counts() -> None:
    """Stamps added are known and counted per half-open range; others are not."""
    ledger = Ledger(100, 100)
    ledger.add([(A, s, 1) for s in (101, 102, 103, 110)] + [(B, 105, 2), (A, 90, 3)])
    assert ledger.seen == {A: [[101, 103], [110, 110]], B: [[105, 105]]}
    assert ledger.mark == 110
    assert [ledger.knows(A, s) for s in (100, 101, 103, 104, 110, 111)] == [
        False, True, True, False, True, False,
    ]  # fmt: skip
    assert (ledger.count(A, 100, 110), ledger.count(A, 102, 109), ledger.count(B, 0, 104)) == (
        4, 1, 0,
    )  # fmt: skip


def test_settling_forgets_what_is_final() -> None:
    """Moving the settle line drops ranges before it and cuts the one it falls in."""
    ledger = Ledger(0, 0)
    ledger.add([(A, s, 1) for s in range(10, 20)] + [(B, 12, 1)])
    ledger.settle(14)
    assert ledger.seen == {A: [[15, 19]]} and ledger.settled == 14
    ledger.settle(3)  # never backwards
    assert ledger.settled == 14


def test_replace_keeps_what_is_outside_the_range() -> None:
    """Replacing a range's stamps leaves the stamps around it."""
    ledger = Ledger(0, 0)
    ledger.add([(A, s, 1) for s in range(1, 30)])
    ledger.replace(A, 10, 20, [12, 15])
    assert ledger.seen[A] == [[1, 10], [12, 12], [15, 15], [21, 29]]
    ledger.replace(A, 0, 40, [])
    assert A not in ledger.seen


series = st.tuples(st.text(max_size=8), st.text(max_size=4), st.text(max_size=4))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(series, st.integers(0, 10**18)), max_size=60), st.integers(1, 90))
def test_fields_round_trip(entries: list[tuple[tuple[str, str, str], int]], part: int) -> None:
    """A ledger stored as fields (cut into parts of ASCII text) reads back equal, hostile
    tag values included."""
    ledger = Ledger(-1, 0)
    ledger.add((s, stamp, 0) for s, stamp in entries)
    old = changelog.PART
    changelog.PART = part
    try:
        fields = ledger.fields()
    finally:
        changelog.PART = old
    texts = [v for k, v in fields.items() if k.startswith("seen")]
    assert all(isinstance(t, str) and t.isascii() and len(t) <= part for t in texts)
    assert Ledger.of(fields) == ledger


def test_a_state_point_without_a_ledger() -> None:
    """A watermark alone (written before ledgers): an empty ledger settled a skew before it,
    as runs used to re-read; no watermark at all: never run."""
    assert Ledger.of({"watermark": 5_000}, margin=1_000) == Ledger(4_000, 5_000, {})
    assert Ledger.of({"watermark": 5_000, "parts": 2, "seen0": "[", "settled": 1}) == Ledger(
        5_000 - changelog.CLOCK_SKEW, 5_000, {}
    )
    assert Ledger.of(None) is None and Ledger.of({"watermark": None}) is None


class Log:
    """A change log in memory, as a roll-up source answers for it."""

    def __init__(self, entries: list[changelog.Entry]) -> None:
        self.log = entries
        self.reads: list[tuple[int, int | None]] = []

    def entries(self, lo, hi, series, scope):  # type: ignore[no-untyped-def]
        self.reads.append((lo, hi))
        return [e for e in self.log if lo < e[1] and (hi is None or e[1] <= hi)
                and (series is None or e[0] in series)
                and changelog.in_scope(e[0], scope)]  # fmt: skip

    def entry_counts(self, lo, hi, scope):  # type: ignore[no-untyped-def]
        out: dict[tuple[str, str, str], int] = {}
        for e in self.log:
            if lo < e[1] <= hi and changelog.in_scope(e[0], scope):
                out[e[0]] = out.get(e[0], 0) + 1
        return out


def test_pending_reads_only_what_differs() -> None:
    """Nothing new: no entry is read; an entry landing behind the watermark is found; the
    settle pass returns every entry it passes, once."""
    log = Log([(A, s, s // 10) for s in range(100, 120)] + [(B, 105, 7)])
    ledger = Ledger(99, 0)
    todo, ledger = changelog.pending(log, ledger, 0)
    assert len(todo) == 21 and ledger.mark == 119
    log.reads.clear()
    todo, ledger = changelog.pending(log, ledger, 0)
    assert todo == [] and log.reads == [(119, None)]  # only what is newer than the watermark
    log.log.append((B, 103, 9))  # behind the watermark
    todo, ledger = changelog.pending(log, ledger, 0)
    assert todo == [(B, 103, 9)]
    assert changelog.pending(log, ledger, 0)[0] == []
    todo, ledger = changelog.pending(log, ledger, 110)  # settle up to 110
    assert sorted(e[1] for e in todo) == sorted([*range(100, 111), 103, 105])
    assert changelog.pending(log, ledger, 110)[0] == []
