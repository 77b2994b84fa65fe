"""``tsmeter posthog``: status from the journal, ping, backfill and retry, against a local
capture server with the real SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import click
import pytest
from click.testing import CliRunner, Result

import tsmeter
from tests.cli.conftest import one_line_error
from tests.posthog_capture import CaptureServer, capture_server
from tsmeter.cli.main import TsmeterGroup, cli
from tsmeter.cli.posthog import posthog
from tsmeter.integrations.posthog import PostHogMirror

pytest.importorskip("posthog")

# The group as `tsmeter posthog` will be registered: the root's options, this one command.
root = TsmeterGroup(name="tsmeter", params=cli.params, callback=cli.callback,
                    commands={"posthog": posthog})  # fmt: skip


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with capture_server() as srv:
        yield srv


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = str(tmp_path / "usage.db")
    with tsmeter.connect(path) as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        meter.record_batch([{"metricKey": "api_calls", "subjectType": "org", "subjectId": "o1",
                             "id": f"r{i}", "timestamp": f"2026-01-05T10:00:{i:02d}Z"}
                            for i in range(12)])  # fmt: skip
    return path


@pytest.fixture
def env(server: CaptureServer, monkeypatch: pytest.MonkeyPatch) -> CaptureServer:
    """PostHog configured for the local capture server, with fast retries."""
    for name, value in {"TSMETER_POSTHOG_API_KEY": "phc_cli_test",
                        "TSMETER_POSTHOG_HOST": server.host,
                        "TSMETER_POSTHOG_SDK_RETRIES": "0", "TSMETER_POSTHOG_RETRIES": "1",
                        "TSMETER_POSTHOG_BACKOFF_BASE": "0.02",
                        "TSMETER_POSTHOG_FLUSH_INTERVAL": "0.05"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    return server


def run(store: str, *args: str, fmt: str | None = None) -> Result:
    options = ["--store", store] + (["--format", fmt] if fmt else [])
    return CliRunner().invoke(root, [*options, "posthog", *args])


def test_every_posthog_command_has_an_example() -> None:
    """Help of the group and of each command shows an example."""
    group = root.commands["posthog"]
    assert isinstance(group, click.Group)
    for name in ["", *group.commands]:
        result = CliRunner().invoke(root, ["posthog", *([name] if name else []), "--help"])
        assert result.exit_code == 0 and "Example:" in result.output, name


def test_status_without_a_key_says_off(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No key: the mirror is off, and status says so (exit 0)."""
    monkeypatch.delenv("TSMETER_POSTHOG_API_KEY", raising=False)
    result = run(store, "status")
    assert result.exit_code == 0, result.output
    assert "PostHog mirror: off" in result.output
    assert json.loads(run(store, "status", fmt="json").output)["enabled"] is False


def test_ping(store: str, env: CaptureServer) -> None:
    """ping sends one real test event and reports PostHog's answer; a failure is one line."""
    result = run(store, "ping", fmt="json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["ok"] is True and env.accepted()[0]["uuid"] == doc["uuid"]
    assert env.accepted()[0]["event"] == "metering.ping"
    env.fail(times=None, status=401)
    line = one_line_error(run(store, "ping", "--timeout", "5"))
    assert "did not accept the test event" in line and "401" in line


def test_backfill_sends_historical_events(store: str, env: CaptureServer) -> None:
    """backfill sends the range's records once, flagged historical_migration."""
    result = run(store, "backfill", "api_calls", "--from", "2026-01-05", "--to", "2026-01-06")
    assert result.exit_code == 0, result.output
    assert "Sent 12 of 12 records of api_calls" in result.output
    assert {r.body["historical_migration"] for r in env.requests} == {True}
    assert len(env.accepted_uuids()) == 12
    assert "--to must be after --from" in one_line_error(
        run(store, "backfill", "api_calls", "--from", "2026-01-06", "--to", "2026-01-05")
    )


def test_status_and_retry_after_failures(store: str, env: CaptureServer) -> None:
    """A mirror that gave up leaves failed events and its counts in the journal: status shows
    them, and retry --failed sends them once PostHog is back."""
    env.fail(times=None, status=503)
    with tsmeter.connect(store) as meter:  # the environment configures the mirror
        mirror = meter.mirror
        assert isinstance(mirror, PostHogMirror)
        meter.record_batch([{"metricKey": "api_calls", "subjectType": "org", "subjectId": "o2",
                             "id": f"f{i}"} for i in range(3)])  # fmt: skip
        assert env.wait_for(lambda: mirror.status().failed == 3, 15.0)
        mirror.shutdown(5.0)
    result = run(store, "status")
    assert result.exit_code == 0, result.output
    assert "stopped" in result.output and "0 pending" in result.output
    assert "3 failed" in result.output
    doc = json.loads(run(store, "status", fmt="json").output)
    assert doc["runs"][0]["failed"] == 3 and doc["unsent"] == {"pending": 0, "failed": 3}
    assert "phc_cli_test" not in json.dumps(doc)
    # the run's times follow the time rule: the configured zone, with its offset, everywhere
    started = datetime.fromisoformat(doc["runs"][0]["startedAt"])
    local = started.astimezone(ZoneInfo("Asia/Kathmandu")).isoformat()
    zone = ["--store", store, "--timezone", "Asia/Kathmandu"]
    zoned = json.loads(CliRunner().invoke(root, [*zone, "--format", "json", "posthog",
                                                 "status"]).output)  # fmt: skip
    assert zoned["runs"][0]["startedAt"] == local and local.endswith("+05:45")
    assert started.utcoffset() == timedelta(0)
    assert local in CliRunner().invoke(root, [*zone, "posthog", "status"]).output
    env.recover()
    result = run(store, "retry", "--failed", "--timeout", "10")
    assert result.exit_code == 0, result.output
    assert "Sent 3 events; 0 failed" in result.output
    assert json.loads(run(store, "status", fmt="json").output)["unsent"]["failed"] == 0
