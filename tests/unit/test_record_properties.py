"""Recording checks the declared properties of records: dimension values (strings, integers,
booleans), closed sets, the fleet-wide bound of open dimensions, and a UNIQUE_COUNT metric's
unique property; on every intake path, through ``record``, ``record_batch``,
``validate_records`` and the outbox. One bad record stores nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tsmeter
from tsmeter import Meter
from tsmeter.errors import ValidationError
from tsmeter.metering import intake as intake_module
from tsmeter.metering.properties import PropertyCheck

PATHS = (("compiled",) if intake_module.compiled is not None else ()) + ("msgspec", "python")


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each intake path in turn (the compiled one where it is built)."""
    monkeypatch.setattr(intake_module, "compiled_path", request.param == "compiled")
    monkeypatch.setattr(intake_module, "fast_path", request.param != "python")
    return str(request.param)


@pytest.fixture
def meter(tmp_path: Path) -> Iterator[Meter]:
    with tsmeter.connect(str(tmp_path / "usage.db")) as opened:
        opened.define_metric(
            "tokens",
            aggregation_type="SUM",
            dimensions=[{"name": "model", "max_values": 3}, {"name": "region",
                                                              "values": ["eu", "us"]}],
        )  # fmt: skip
        opened.define_metric("mau", aggregation_type="UNIQUE_COUNT", unique_property="user_id")
        opened.define_metric("api_calls", aggregation_type="COUNT")
        yield opened


def rec(i: int, metadata: dict[str, Any] | None, metric: str = "tokens") -> dict[str, Any]:
    out: dict[str, Any] = {"id": f"r{i}", "metricKey": metric, "subjectType": "org",
                           "subjectId": f"o{i % 7}", "quantity": i % 5 + 1}  # fmt: skip
    if metadata is not None:
        out["metadata"] = metadata
    return out


def stored(meter: Meter) -> int:
    return sum(sum(1 for _ in meter.iter_usage(m.key)) for m in meter.list_metrics())


def model_values(meter: Meter) -> set[str]:
    port = meter.capabilities.dimension_values
    assert port is not None
    return port.known(meter.get_metric("tokens").id, "model")


def test_good_records_are_stored_on_every_path(meter: Meter, path: str) -> None:
    """Strings, integers and booleans are values; a record without a dimension is fine."""
    values = ["gpt", 4, True, None]
    batch = [rec(i, {"model": values[i % 4], "region": "eu" if i % 2 else "us", "n": 1.5})
             for i in range(5000)]  # fmt: skip
    batch += [rec(5000 + i, None) for i in range(3)]
    assert meter.record_batch(batch).recorded == len(batch)
    assert model_values(meter) == {"gpt", "4", "true"}


@pytest.mark.parametrize(
    ("metadata", "field", "says"),
    [
        ({"model": 1.5}, "model", "got float"),
        ({"model": ["a"]}, "model", "got list"),
        ({"model": {"a": 1}}, "model", "got dict"),
        ({"model": ""}, "model", "must not be empty"),
        ({"model": "a\nb"}, "model", "control"),
        ({"region": "ap"}, "region", "'ap' is not a value of dimension 'region' of metric"
                                     " 'tokens', which takes only 'eu', 'us'"),
        ({"region": 1}, "region", "'1' is not a value"),
    ],
)  # fmt: skip
def test_one_bad_value_stores_nothing(
    meter: Meter, path: str, metadata: dict[str, Any], field: str, says: str
) -> None:
    """A bad value far into a batch is named with its index; nothing of the batch is kept."""
    batch = [rec(i, {"model": "gpt", "region": "eu"}) for i in range(3000)]
    batch[2500] = rec(2500, metadata)
    with pytest.raises(ValidationError) as err:
        meter.record_batch(batch)
    assert err.value.field == f"records[2500].metadata.{field}"
    assert says in str(err.value)
    assert stored(meter) == 0


def test_the_bound_refuses_the_batch_that_would_pass_it(meter: Meter, path: str) -> None:
    """An open dimension takes at most max_values distinct values: the record bringing one
    too many is named, with the bound; the batch is refused whole and admits nothing."""
    meter.record_batch([rec(i, {"model": m}) for i, m in enumerate(["a", "b", "a"])])
    batch = [rec(10 + i, {"model": m}) for i, m in enumerate(["a", "c", "b", "d", "e"])]
    with pytest.raises(ValidationError) as err:
        meter.record_batch(batch)
    assert err.value.field == "records[1].metadata.model"
    text = str(err.value)
    assert "'c' (and 2 other new values) would pass the bound of dimension 'model'" in text
    assert "at most 3 distinct values (max_values), 2 taken" in text
    assert "tag value on InfluxDB" in text
    assert stored(meter) == 3
    assert model_values(meter) == {"a", "b"}
    meter.record_batch(batch[:2])  # 'c' still fits
    assert model_values(meter) == {"a", "b", "c"}
    with pytest.raises(ValidationError, match="'d' would pass the bound"):
        meter.record("tokens", "org", "o1", 1, metadata={"model": "d"})
    meter.record("tokens", "org", "o1", 1, metadata={"model": "c"})
    assert stored(meter) == 6


def test_the_bound_holds_across_meters_on_one_state_file(meter: Meter, tmp_path: Path) -> None:
    """Another Meter (another process) on the same file counts the same values."""
    meter.record_batch([rec(i, {"model": m}) for i, m in enumerate(["a", "b"])])
    with tsmeter.connect(str(tmp_path / "usage.db")) as other:
        other.record("tokens", "org", "o1", 1, metadata={"model": "c"})
        with pytest.raises(ValidationError, match="3 taken"):
            other.record("tokens", "org", "o1", 1, metadata={"model": "d"})
    with pytest.raises(ValidationError, match="'d' would pass the bound"):
        meter.record("tokens", "org", "o1", 1, metadata={"model": "d"})


def test_known_values_do_not_reach_the_state_store(
    meter: Meter, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Values admitted once are remembered in the process: recording them again asks the
    state store nothing."""
    meter.record_batch([rec(i, {"model": m}) for i, m in enumerate(["a", "b"])])
    port = meter.capabilities.dimension_values
    asked: list[Any] = []
    monkeypatch.setattr(port, "admit", lambda *args: asked.append(args) or set())
    meter.record_batch([rec(10 + i, {"model": "ab"[i % 2]}) for i in range(1000)])
    assert asked == []
    meter.record("tokens", "org", "o1", 1, metadata={"model": "c"})
    assert len(asked) == 1 and list(asked[0][2]) == ["c"]


def test_a_unique_count_record_needs_its_property(meter: Meter, path: str) -> None:
    """A UNIQUE_COUNT metric refuses a record without its unique property, or with a value
    that is not a string, integer or boolean."""
    batch = [rec(i, {"user_id": f"u{i % 13}"}, "mau") for i in range(3000)]
    batch[2999] = rec(2999, {"other": "x"}, "mau")
    with pytest.raises(ValidationError) as err:
        meter.record_batch(batch)
    assert err.value.field == "records[2999].metadata.user_id"
    assert "is required: metric 'mau' counts the distinct values of 'user_id'" in str(err.value)
    batch[2999] = rec(2999, {"user_id": 2.5}, "mau")
    with pytest.raises(ValidationError, match=r"records\[2999\]\.metadata\.user_id: .*float"):
        meter.record_batch(batch)
    assert stored(meter) == 0
    batch[2999] = rec(2999, {"user_id": 42}, "mau")
    assert meter.record_batch(batch).recorded == 3000
    with pytest.raises(ValidationError) as single:
        meter.record("mau", "org", "o1", 1)
    assert single.value.field == "metadata.user_id"


def test_metrics_without_properties_are_not_checked(
    meter: Meter, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Records of metrics that declare nothing never reach the property check."""

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("checked")

    monkeypatch.setattr(PropertyCheck, "rows", fail)
    batch = [rec(i, {"model": 1.5}, "api_calls") for i in range(3000)]
    assert meter.record_batch(batch).recorded == 3000
    meter.record("api_calls", "org", "o1", metadata={"model": [1]})


def test_validate_records_checks_without_admitting(meter: Meter) -> None:
    """validate_records names each bad record and keeps no value: checking is not using."""
    meter.record_batch([rec(i, {"model": m}) for i, m in enumerate(["a", "b"])])
    checks = meter.validate_records([
        rec(1, {"model": "c"}), rec(2, {"model": "zz", "region": "ap"}),
        rec(3, {"model": 1.5}), rec(4, {"user_id": "u"}, "mau"), rec(5, {}, "mau"),
    ])  # fmt: skip
    assert checks[0] is None and checks[3] is None
    assert [(c.field if c else None) for c in checks] == [
        None, "metadata.region", "metadata.model", None, "metadata.user_id"]  # fmt: skip
    assert model_values(meter) == {"a", "b"}
    meter.record_batch([rec(10, {"model": "c"})])
    [full] = meter.validate_records([rec(11, {"model": "d"})])
    assert full is not None and full.field == "metadata.model"
    assert "would pass the bound" in str(full)


def test_the_outbox_path_refuses_before_queueing(tmp_path: Path) -> None:
    """With an outbox, a bad record is refused before anything is queued."""
    with tsmeter.connect(str(tmp_path / "u.db"), outbox=str(tmp_path / "o.db")) as meter:
        meter.define_metric("tokens", dimensions=[{"name": "model", "max_values": 1}])
        meter.record_batch([rec(i, {"model": "a"}) for i in range(10)])
        with pytest.raises(ValidationError, match="would pass the bound"):
            meter.record_batch([rec(20, {"model": "a"}), rec(21, {"model": "b"})])
        with pytest.raises(ValidationError, match="got float"):
            meter.record("tokens", "org", "o1", 1, metadata={"model": 0.5})
        assert meter.outbox is not None
        assert meter.flush()
        status = meter.outbox.status()
        assert status.delivered + status.pending == 10
        assert stored(meter) == 10


def test_a_unique_count_record_may_leave_the_quantity_out(meter: Meter, path: str) -> None:
    """A distinct count counts the unique property, not quantities: a record without one
    counts 1, as for COUNT; a SUM record still needs one."""
    batch = [{"metricKey": "mau", "subjectType": "org", "subjectId": "o1", "id": f"u{i}",
              "metadata": {"user_id": f"u{i % 3}"}} for i in range(3000)]  # fmt: skip
    assert meter.record_batch(batch).recorded == 3000
    assert {r.quantity for r in meter.iter_usage("mau")} == {1}
    with pytest.raises(ValidationError, match="quantity: is required for SUM metric 'tokens'"):
        meter.record("tokens", "org", "o1", metadata={"model": "a"})


def test_a_batch_refused_by_one_bound_takes_no_value_of_another(meter: Meter) -> None:
    """New values of several open dimensions are all checked before any is admitted."""
    meter.define_metric("calls", dimensions=[{"name": "route", "max_values": 5},
                                             {"name": "status", "max_values": 1}])  # fmt: skip
    meter.record("calls", "org", "o1", 1, metadata={"route": "/a", "status": 200})
    with pytest.raises(ValidationError, match="'500' would pass the bound of dimension 'status'"):
        meter.record_batch([rec(1, {"route": "/b", "status": 200}, "calls"),
                            rec(2, {"route": "/c", "status": 500}, "calls")])  # fmt: skip
    port = meter.capabilities.dimension_values
    assert port is not None
    assert port.known(meter.get_metric("calls").id, "route") == {"/a"}


def test_org_definitions_are_checked_by_their_own_declaration(meter: Meter, path: str) -> None:
    """An org's own definition of a metric declares its own dimensions; other orgs' records
    go by the global one, in the same batch."""
    meter.define_metric("tokens", org_id="acme", dimensions=[{"name": "tier", "values": ["x"]}])
    good = [{**rec(i, {"tier": "x", "model": 1.5}), "orgId": "acme"} for i in range(2000)]
    good += [{**rec(2000 + i, {"model": "m", "tier": 2.5}), "orgId": "beta"} for i in range(10)]
    assert meter.record_batch(good).recorded == 2010
    bad = [{**rec(3000, {"tier": "y"}), "orgId": "acme"}]
    with pytest.raises(ValidationError, match="'y' is not a value of dimension 'tier'"):
        meter.record_batch(bad)
    with pytest.raises(ValidationError, match=r"records\[0\]\.metadata\.model: .*float"):
        meter.record_batch([{**rec(3001, {"model": 1.5}), "orgId": "beta"}])
