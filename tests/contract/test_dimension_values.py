"""The DimensionValues contract: the distinct values of metrics' open dimensions, bounded
fleet-wide, on the SQLite state file and on the fleet's PostgreSQL alike (a real server,
started by the tests), including processes racing for a dimension's last free value."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hostile import NASTY_NAMES
from tsmeter.ports import DimensionValues


def _open(kind: str, where: str) -> tuple[DimensionValues, Callable[[], None]]:
    """A DimensionValues on ``where`` (a file, or a PostgreSQL URL) and what closes it."""
    if kind == "postgres":
        from tsmeter.adapters.postgres.database import StateDatabase
        from tsmeter.adapters.postgres.dimensions import PostgresDimensionValues

        db = StateDatabase(where, max_size=2)
        return PostgresDimensionValues(db), db.close
    from tsmeter.adapters.sqlite import SQLiteStore

    store = SQLiteStore(where)
    return store, store.close


class Place:
    """One backing state store; ``open()`` gives another handle on it (another connection,
    or another pool as another host of a fleet would have)."""

    def __init__(self, kind: str, where: str) -> None:
        self.kind, self.where = kind, where
        self._close: list[Callable[[], None]] = []

    def open(self) -> DimensionValues:
        values, close = _open(self.kind, self.where)
        self._close.append(close)
        return values

    def close(self) -> None:
        for close in reversed(self._close):
            close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    where = (request.getfixturevalue("pg_url") if request.param == "postgres"
             else str(tmp_path / "state.db"))  # fmt: skip
    opened = Place(request.param, where)
    yield opened
    opened.close()


@pytest.fixture
def values(place: Place) -> DimensionValues:
    return place.open()


def test_values_within_the_limit_are_admitted_and_known(values: DimensionValues) -> None:
    """Values that fit are kept; known values admitted again take no further slot."""
    assert values.known("m1", "model") == set()
    assert values.admit("m1", "model", ["gpt-4o", "mixtral"], 3) == set()
    assert values.admit("m1", "model", ["mixtral", "gpt-4o", "mixtral"], 3) == set()
    assert values.admit("m1", "model", ["mistral", "mixtral"], 3) == set()
    assert values.known("m1", "model") == {"gpt-4o", "mixtral", "mistral"}
    assert values.admit("m1", "model", [], 3) == set()


def test_values_past_the_limit_are_refused_and_none_is_kept(values: DimensionValues) -> None:
    """A call that would pass the limit keeps none of its new values and names them all."""
    assert values.admit("m1", "region", ["eu"], 2) == set()
    assert values.admit("m1", "region", ["eu", "us", "ap"], 2) == {"us", "ap"}
    assert values.known("m1", "region") == {"eu"}
    assert values.admit("m1", "region", ["us"], 2) == set()
    assert values.admit("m1", "region", ["ap"], 2) == {"ap"}
    assert values.admit("m1", "region", ["eu", "us"], 2) == set()  # known: always fine
    assert values.known("m1", "region") == {"eu", "us"}


def test_each_metric_and_dimension_has_its_own_values(values: DimensionValues) -> None:
    """The bound counts the values of one dimension of one metric."""
    assert values.admit("m1", "region", ["eu"], 1) == set()
    assert values.admit("m2", "region", ["us"], 1) == set()
    assert values.admit("m1", "zone", ["us"], 1) == set()
    assert values.known("m1", "region") == {"eu"}
    assert values.known("m2", "region") == {"us"}
    assert values.known("m1", "zone") == {"us"}


def test_another_handle_sees_the_values_and_the_bound(place: Place) -> None:
    """Values admitted through one handle count for another (another process or host)."""
    first, second = place.open(), place.open()
    assert first.admit("m1", "model", ["a", "b"], 3) == set()
    assert second.known("m1", "model") == {"a", "b"}
    assert second.admit("m1", "model", ["c", "d"], 3) == {"c", "d"}
    assert second.admit("m1", "model", ["c"], 3) == set()
    assert first.admit("m1", "model", ["d"], 3) == {"d"}


@pytest.mark.parametrize("value", NASTY_NAMES)
def test_hostile_values_are_data(values: DimensionValues, value: str) -> None:
    """Quotes, separators, SQL and unicode in a value are kept exactly as given."""
    assert values.admit("m1", "model", [value, "plain"], 2) == set()
    assert values.known("m1", "model") == {value, "plain"}
    assert values.admit("m1", "model", [value + "x"], 2) == {value + "x"}


ROUNDS = 15


def _racer(kind: str, where: str, k: int, start: Any, answers: Any) -> None:
    """Admit value ``host<k>`` of dimension ``d<round>`` in each round, all racers at once."""
    values, close = _open(kind, where)
    try:
        won = []
        for r in range(ROUNDS):
            start.wait(timeout=60)
            if not values.admit("metric-1", f"d{r}", [f"host{k}"], 3):
                won.append(r)
        answers.put((k, won))
    finally:
        close()


def test_processes_racing_for_the_last_free_value_exactly_one_wins(place: Place) -> None:
    """Two processes bring a new value each when one slot of the dimension is free, round
    after round: exactly one wins each round, and the dimension ends with its bound."""
    first = place.open()
    for r in range(ROUNDS):
        assert first.admit("metric-1", f"d{r}", ["old-1", "old-2"], 3) == set()
    ctx = multiprocessing.get_context("spawn")
    start, answers = ctx.Barrier(2), ctx.Queue()
    racers = [ctx.Process(target=_racer, args=(place.kind, place.where, k, start, answers))
              for k in range(2)]  # fmt: skip
    for racer in racers:
        racer.start()
    try:
        got = dict(answers.get(timeout=240) for _ in racers)
    finally:
        for racer in racers:
            racer.join(timeout=60)
            if racer.is_alive():
                racer.kill()
    assert [racer.exitcode for racer in racers] == [0, 0]
    for r in range(ROUNDS):
        winners = [k for k, won in got.items() if r in won]
        assert len(winners) == 1, (r, got)
        assert first.known("metric-1", f"d{r}") == {"old-1", "old-2", f"host{winners[0]}"}


@pytest.mark.parametrize("state", ["file", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_hosts_connected_to_one_store_share_the_bound(
    state: str, influx_db: tuple[Any, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two Meters opened by ``tsmeter.connect`` on one InfluxDB (two hosts), with the state
    file or the fleet's PostgreSQL, count one dimension's values together; a refused value
    stores nothing on InfluxDB."""
    import tsmeter
    from tsmeter.errors import ValidationError

    server, db = influx_db
    where = request.getfixturevalue("pg_url") if state == "postgres" else tmp_path / "s.db"
    url = f"influxdb://127.0.0.1:{server.port}/{db}?writer=W&state={where}"
    with tsmeter.connect(url, outbox=False) as first, tsmeter.connect(url, outbox=False) as second:
        first.define_metric("tokens", dimensions=[{"name": "model", "max_values": 2}])
        first.record("tokens", "org", "o1", 1, metadata={"model": "a"})
        second.record("tokens", "org", "o1", 2, metadata={"model": "b"})
        with pytest.raises(ValidationError, match=r"'c' would pass the bound.*2 taken"):
            first.record("tokens", "org", "o1", 3, metadata={"model": "c"})
        with pytest.raises(ValidationError, match=r"records\[1\]\.metadata\.model"):
            second.record_batch([
                {"metricKey": "tokens", "subjectType": "org", "subjectId": "o1",
                 "quantity": 4, "metadata": {"model": "a"}},
                {"metricKey": "tokens", "subjectType": "org", "subjectId": "o1",
                 "quantity": 5, "metadata": {"model": "d"}}])  # fmt: skip
        second.record("tokens", "org", "o1", 6, metadata={"model": "a"})
        assert sorted(r.quantity for r in first.iter_usage("tokens")) == [1, 2, 6]
        port = first.capabilities.dimension_values
        assert port is not None
        assert port.known(first.get_metric("tokens").id, "model") == {"a", "b"}
