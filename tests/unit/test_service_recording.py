"""Recording as one unit of work: a failure anywhere takes the quota reservation back."""

from __future__ import annotations

import pytest

import tsmeter
from tsmeter.domain import RecordRow
from tsmeter.errors import StorageUnavailableError

AT = "2026-01-05T10:00:00Z"


def _failing(*args: object) -> int:
    raise StorageUnavailableError("the store is down")


@pytest.mark.parametrize("batch", [False, True])
def test_a_failed_write_leaves_no_reservation(monkeypatch: pytest.MonkeyPatch, batch: bool) -> None:
    """With ``enforce``, a record the store could not take does not count against the quota:
    the next check still sees the whole limit, and a retry is allowed and counted once."""
    with tsmeter.connect("sqlite:///:memory:") as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        meter.create_threshold("api_calls", "org", 1, subject_id="o1", action="BLOCK")
        item = {"metricKey": "api_calls", "subjectType": "org", "subjectId": "o1", "id": "r1"}
        with monkeypatch.context() as patch:
            patch.setattr(meter.store, "append", _failing)
            with pytest.raises(StorageUnavailableError):
                if batch:
                    meter.record_batch([item], enforce=True)
                else:
                    meter.record("api_calls", "org", "o1", id="r1", enforce=True)
        assert meter.check("api_calls", "org", "o1").allowed
        meter.record("api_calls", "org", "o1", id="r1", enforce=True)
        assert not meter.check("api_calls", "org", "o1").allowed


def test_a_failing_sink_does_not_undo_a_stored_record() -> None:
    """Sinks run after the store took the rows: one that fails is logged, the record stays
    counted."""
    seen: list[RecordRow] = []

    def broken(rows: object) -> None:
        raise RuntimeError("sink down")

    with tsmeter.connect("sqlite:///:memory:") as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        meter.create_threshold("api_calls", "org", 1, subject_id="o1", action="BLOCK")
        meter.add_record_sink(broken)
        meter.add_record_sink(lambda rows: seen.extend(rows))  # type: ignore[arg-type]
        meter.record("api_calls", "org", "o1", id="r1", timestamp=AT)
        assert [r.id for r in seen] == ["r1"]
        assert meter.get_usage("api_calls", "org", "o1")[0].id == "r1"
