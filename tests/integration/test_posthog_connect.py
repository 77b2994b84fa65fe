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


def test_a_second_mirror_on_one_meter_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mirror attached by hand to a meter tsmeter.connect() already mirrors would send every
    event twice: it is refused with an error saying what to do; with mirror=False, or once the
    first is shut down, one attaches, and each record arrives once."""
    from tsmeter.integrations.posthog import PostHogMirror, PostHogSettings

    with capture_server() as capture:
        env = {"TSMETER_POSTHOG_API_KEY": "phc_test", "TSMETER_POSTHOG_HOST": capture.host}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = PostHogSettings.from_env(env)
        with tsmeter.connect(str(tmp_path / "u.db")) as meter:
            first = meter.mirror
            with pytest.raises(tsmeter.ConflictError, match="mirror=False"):
                PostHogMirror(settings, meter, journal=str(tmp_path / "second.db"))
            third = PostHogMirror(settings, journal=str(tmp_path / "third.db"))
            with pytest.raises(tsmeter.ConflictError, match="already has a PostHog mirror"):
                third.attach(meter)
            third.shutdown(timeout=5)
            assert meter.mirror is first
            first.shutdown(timeout=5)
            own = PostHogMirror(settings, meter, journal=str(tmp_path / "own.db"))
            assert meter.mirror is own
            meter.define_metric("api_calls", aggregation_type="COUNT")
            meter.record("api_calls", "org", "acme", id="r1")
            own.shutdown(timeout=5)
        with tsmeter.connect(str(tmp_path / "v.db"), mirror=False) as meter:
            mine = PostHogMirror(settings, meter, journal=str(tmp_path / "mine.db"))
            meter.define_metric("api_calls", aggregation_type="COUNT")
            meter.record("api_calls", "org", "acme", id="r2")
            mine.shutdown(timeout=5)
        ids = sorted(e["properties"]["recordId"] for e in capture.accepted())
    assert ids == ["r1", "r2"]
