"""The Flux queries of the roll-up ledger (change-log entries by series, counts, the state
point) parse with Flux's own parser, never hold a value in their text, and carry hostile
values intact."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests import fluxcheck
from tests.hostile import names
from tsmeter.adapters.influxdb import flux

T = 1_767_225_600_000_000_000


def _queries(v: list[str]) -> list[flux.Flux]:
    """Every ledger query, built from the values ``v``."""
    series = [(v[0], v[1], v[2]), (v[3], "", v[4])]
    return [
        flux.watermark(v[5], v[0]),
        flux.dirty(v[5], T, None, T + 10, series),
        flux.dirty(v[5], T, (v[0], v[1]), T + 10, series),
        flux.dirty(v[5], T, (v[0], None)),
        flux.dirty_counts(v[5], T, T + 10, None),
        flux.dirty_counts(v[5], T, T + 10, (v[0], v[1])),
    ]


@settings(max_examples=10, deadline=None)
@given(st.lists(names, min_size=6, max_size=6), st.lists(names, min_size=6, max_size=6))
def test_ledger_queries_are_valid_flux_and_never_hold_values(a: list[str], b: list[str]) -> None:
    """Every query parses with its bound values rendered as the options influxdb-client
    sends, the values arrive intact, and the text is the same whatever the values are."""
    first, second = _queries(a), _queries(b)
    assert [q.text for q in first] == [q.text for q in second]
    results = fluxcheck.assert_valid(*(q.source() for q in first))
    for query, result in zip(first, results, strict=True):
        bound = [v for v in query.params.values() if isinstance(v, str)]
        assert result.strings[: len(bound)] == bound


def test_ranges_are_half_open_the_other_way() -> None:
    """Entries stamped in (lo, hi]: Flux ranges are [start, stop), so both ends move by one."""
    q = flux.dirty_counts("b", 10, 20, None)
    assert (q.params["tsm_lo"], q.params["tsm_hi"]) == (11, 21)
    q = flux.dirty("b", 10, None)
    assert q.params["tsm_lo"] == 11 and q.params["tsm_hi"] == flux.END
