"""The Flux side of corrections (InfluxDB 2.x, no server here): every query parses with Flux's
own parser, never holds a value in its text, and carries hostile values intact; the delete of
one point names only keys the delete API takes and writes the other points of its microsecond
back."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests import fluxcheck
from tests.hostile import names
from tsmeter.adapters.influxdb import flux
from tsmeter.adapters.influxdb.corrections import FluxCorrections
from tsmeter.domain import RecordRow
from tsmeter.ports import CorrectionQuery

T = 1_767_225_600_123_456_789


class Recorder:
    """Stands in for InfluxV2Client where no 2.x server runs: keeps each call, and answers
    queries with the tables it was given."""

    def __init__(self, tables: list[Any] | None = None) -> None:
        self.queries: list[flux.Flux] = []
        self.deletes: list[tuple[str, int, int]] = []
        self.writes: list[bytes] = []
        self._tables = tables or []

    def tables(self, query: flux.Flux) -> list[Any]:
        self.queries.append(query)
        return self._tables

    def delete(self, predicate: str, start: int, stop: int) -> None:
        self.deletes.append((predicate, start, stop))

    def write(self, body: bytes) -> None:
        self.writes.append(body)


def _queries(v: list[str]) -> list[flux.Flux]:
    api = Recorder()
    backend = FluxCorrections(api, v[0])  # type: ignore[arg-type]
    place = RecordRow(v[1], v[2], "org", v[3], v[4], 0, T, None, None)
    backend.point(v[1], [place])
    backend.corrections(CorrectionQuery(v[2], v[4], v[1], 0, T))
    backend.corrections(CorrectionQuery(None, v[4]))
    backend.cancelled([place, place._replace(id=v[5], ts=T + 5)])
    backend.delete({"metric": v[2], "org": v[4], "subject_type": "org", "subject_id": v[3],
                    "w": "w1", "c": "", "dim.model": v[5]}, T)  # fmt: skip
    return api.queries


@settings(max_examples=10, deadline=None)
@given(st.lists(names, min_size=6, max_size=6), st.lists(names, min_size=6, max_size=6))
def test_correction_queries_are_valid_flux_and_never_hold_values(
    a: list[str], b: list[str]
) -> None:
    """Every query parses with its bound values as influxdb-client sends them, the values
    arrive intact, and the text is the same whatever the values are."""
    first, second = _queries(a), _queries(b)
    assert [q.text for q in first] == [q.text for q in second]
    results = fluxcheck.assert_valid(*(q.source() for q in first))
    for query, result in zip(first, results, strict=True):
        bound = [v for v in query.params.values() if isinstance(v, str)]
        assert result.strings[: len(bound)] == bound


def _table(tags: dict[str, str], fields: dict[str, Any]) -> Any:
    columns = [SimpleNamespace(label=k, group=True) for k in ("_measurement", *tags)]
    columns += [SimpleNamespace(label=k, group=False) for k in (*fields, "t")]
    return SimpleNamespace(
        columns=columns,
        records=[
            SimpleNamespace(
                values={"_measurement": "usage", "result": "_result", "table": 0, **tags, **fields}
            )
        ],
    )


def test_deleting_one_point_writes_back_its_neighbours() -> None:
    """The delete names the plain tag keys (not ``dim.model``) over the point's microsecond;
    the other points read there (another dimension value, another nanosecond) are written
    back, the point itself is not."""
    tags = {"metric": "gb", "subject_type": "org", "subject_id": "acme", "w": "w1",
            "dim.model": "m1"}  # fmt: skip
    ours = _table(tags, {"rid": "r1", "units": 5, "t": T})
    other_dim = _table({**tags, "dim.model": "m2"}, {"rid": "r2", "units": 6, "t": T})
    other_ns = _table(tags, {"rid": "r3", "units": 7, "t": T + 1})
    api = Recorder([ours, other_dim, other_ns])
    FluxCorrections(api, "b").delete({**tags, "org": "", "c": ""}, T)  # type: ignore[arg-type]
    ((predicate, start, stop),) = api.deletes
    assert predicate == (
        '_measurement="usage" AND metric="gb" AND subject_id="acme" AND subject_type="org"'
        ' AND w="w1"'
    )
    assert (start, stop) == (T // 1000 * 1000, T // 1000 * 1000 + 999)
    written = b"".join(api.writes).decode()
    assert "r1" not in written and written.count("\n") == 2
    assert "dim.model=m2,metric=gb" in written and f'rid="r3",units=7i {T + 1}' in written
