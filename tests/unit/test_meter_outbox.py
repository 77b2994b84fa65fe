"""A Meter with an outbox in front of its store: what callers see."""

from __future__ import annotations

from pathlib import Path

import pytest

import tsmeter
from tsmeter.errors import QuotaExceededError, ValidationError


@pytest.mark.parametrize("durability", ["outbox", "memory"])
def test_records_go_through_the_outbox_exactly_once(tmp_path: Path, durability: str) -> None:
    """record and record_batch queue; reads see what was queued; an id queued twice counts
    once; sinks see rows once delivered; close leaves nothing behind."""
    sunk: list[str] = []
    with tsmeter.connect(str(tmp_path / "u.db"), outbox=str(tmp_path / "outbox.db"),
                         durability=durability) as meter:  # fmt: skip
        meter.add_record_sink(lambda rows: sunk.extend(r.id for r in rows))
        meter.define_metric("api_calls", aggregation_type="COUNT")
        assert meter.record("api_calls", "org", "o1", id="r0").id == "r0"
        result = meter.record_batch(
            [
                {"metricKey": "api_calls", "subjectType": "org", "subjectId": "o1", "id": f"r{i}"}
                for i in range(100)
            ]
        )
        assert (result.recorded, result.queued) == (0, 100)
        assert meter.get_usage_summary("api_calls", "org", "o1", "YEARLY").total_quantity == 100
        assert meter.flush(5)
        assert meter.outbox is not None and meter.outbox.status().pending == 0
    assert sorted(sunk) == sorted(["r0"] + [f"r{i}" for i in range(100)])


def test_quotas_and_validation_with_an_outbox(tmp_path: Path) -> None:
    """A BLOCK limit counts queued records; bad input is refused before anything is queued."""
    with tsmeter.connect(str(tmp_path / "u.db"), outbox=str(tmp_path / "o.db")) as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT", reset_period="DAILY")
        meter.create_threshold("api_calls", "org", 3, action="BLOCK")
        for _ in range(3):
            meter.record("api_calls", "org", "o1", enforce=True)
        with pytest.raises(QuotaExceededError):
            meter.record("api_calls", "org", "o1", enforce=True)
        with pytest.raises(ValidationError, match="quantity"):
            meter.record_batch([{"metricKey": "api_calls", "subjectType": "org",
                                 "subjectId": "o2", "quantity": float("nan")}])  # fmt: skip
        assert meter.outbox is not None
        status = meter.outbox.status()
        assert status.delivered + status.pending == 3
        assert meter.get_usage_summary("api_calls", "org", "o1").total_quantity == 3


def test_bad_durability_and_memory_outbox_are_refused(tmp_path: Path) -> None:
    """Options are checked up front."""
    with pytest.raises(ValidationError, match="durability"):
        tsmeter.connect(str(tmp_path / "u.db"), outbox=str(tmp_path / "o.db"), durability="x")
    with pytest.raises(ValidationError, match="outbox"):
        tsmeter.connect(str(tmp_path / "u.db"), outbox=":memory:")
