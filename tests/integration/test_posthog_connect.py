"""``tsmeter.connect`` attaches the PostHog mirror the environment configures, through the
outbox too, and closing the meter flushes it (the real SDK against a local capture server)."""

from __future__ import annotations

from pathlib import Path

import pytest

import tsmeter
from tests.posthog_capture import capture_server


@pytest.mark.parametrize("outbox", [False, True])
def test_connect_mirrors_records_and_threshold_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outbox: bool
) -> None:
    """With $TSMETER_POSTHOG_API_KEY set, records (after delivery, with an outbox) and
    threshold events arrive as events; close() flushes before returning."""
    with capture_server() as capture:
        monkeypatch.setenv("TSMETER_POSTHOG_API_KEY", "phc_test")
        monkeypatch.setenv("TSMETER_POSTHOG_HOST", capture.host)
        options = {"outbox": str(tmp_path / "outbox.db")} if outbox else {}
        with tsmeter.connect(str(tmp_path / "u.db"), **options) as meter:
            assert meter.mirror is not None
            meter.define_metric("api_calls", aggregation_type="COUNT")
            meter.create_threshold("api_calls", "org", 3, "acme")
            meter.record_batch([
                {"metricKey": "api_calls", "subjectType": "org", "subjectId": "acme",
                 "id": f"r{i}"} for i in range(3)
            ])  # fmt: skip
            assert meter.evaluate_thresholds().exceeded == 1
        names = sorted(e["event"] for e in capture.accepted())
    assert names == ["metering.threshold_exceeded"] + ["metering.usage_recorded"] * 3


def test_no_key_no_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a key the mirror is off and the SDK is not needed."""
    monkeypatch.delenv("TSMETER_POSTHOG_API_KEY", raising=False)
    with tsmeter.connect(str(tmp_path / "u.db")) as meter:
        assert meter.mirror is None


def test_mirror_can_be_forced_off_or_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mirror=False keeps it off whatever the environment says; mirror=True without a key is
    an error naming the setting."""
    monkeypatch.setenv("TSMETER_POSTHOG_API_KEY", "phc_test")
    with tsmeter.connect(str(tmp_path / "u.db"), mirror=False) as meter:
        assert meter.mirror is None
    monkeypatch.delenv("TSMETER_POSTHOG_API_KEY")
    with pytest.raises(tsmeter.ValidationError, match="TSMETER_POSTHOG_API_KEY"):
        tsmeter.connect(str(tmp_path / "u.db"), mirror=True)
