"""``tsmeter notifications``: listing the delivery log and retrying, on a real store file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import tsmeter
from tests.cli.conftest import Cli, one_line_error
from tests.notify_servers import webhook_server
from tsmeter.cli.main import TsmeterGroup, cli
from tsmeter.cli.notifications import notifications
from tsmeter.domain import UsageAlert, UsageThreshold
from tsmeter.events import ThresholdExceeded
from tsmeter.notify import Notifier, NotifySettings

# The root command with the group registered, as tsmeter/cli/main.py does it.
root = TsmeterGroup(
    name="tsmeter",
    params=cli.params,
    callback=cli.callback,
    commands={**cli.commands, "notifications": notifications},
    context_settings=cli.context_settings,
)


def invoke(run: Cli, *args: str, fmt: str | None = None, **env: str) -> Result:
    """Run ``tsmeter --store <store> [--format F] notifications ARGS``."""
    options = ["--store", run.store] + (["--format", fmt] if fmt else [])
    return CliRunner().invoke(root, [*options, "notifications", *args], env=env)


def ok(run: Cli, *args: str, fmt: str | None = None, **env: str) -> Result:
    """Like :func:`invoke`, and it must succeed."""
    result = invoke(run, *args, fmt=fmt, **env)
    assert result.exit_code == 0, result.output
    return result


def enqueue(path: Path, url: str) -> None:
    """Log one webhook delivery for a threshold.exceeded event into the store at ``path``."""
    threshold = UsageThreshold(
        metric_key="api_calls", subject_type="org", threshold=10, notify_webhook=url
    )
    alert = UsageAlert(
        threshold_id=threshold.id, metric_key="api_calls", subject_type="org",
        subject_id="acme", level="exceeded", period_start=None, period_end=None,
        actual_value=12, threshold_value=10, percentage=120,
    )  # fmt: skip
    with tsmeter.connect(f"sqlite:///{path}") as meter:
        notifier = Notifier.for_meter(meter, NotifySettings(), worker=False)
        meter.events.publish(ThresholdExceeded(alert=alert, threshold=threshold))
        notifier.close()


def test_list_empty(run: Cli) -> None:
    """No deliveries yet: a note on stderr, an empty JSON array."""
    result = ok(run, "list")
    assert result.stdout == "" and "No deliveries." in result.stderr
    assert json.loads(ok(run, "list", fmt="json").stdout) == []


def test_list_and_retry(run: Cli) -> None:
    """A pending delivery is listed, ``retry`` sends it, and it is then listed as delivered."""
    with webhook_server() as hook:
        enqueue(run.path, hook.url)
        [row] = json.loads(ok(run, "list", "--status", "pending", fmt="json").stdout)
        assert (row["channel"], row["target"], row["attempts"]) == ("webhook", hook.url, 0)
        assert row["event"] == "threshold.exceeded" and row["subjectId"] == "acme"
        table = ok(run, "list").stdout
        assert "threshold.exceeded" in table and "pending" in table
        result = ok(run, "retry", TSMETER_WEBHOOK_SECRET="k")
        assert result.stdout.strip() == "Delivered 1, deferred 0, failed 0."
        assert "X-Tsmeter-Signature" in hook.hits[0].headers
    [done] = json.loads(ok(run, "list", "--status", "delivered", fmt="json").stdout)
    assert done["attempts"] == 1 and done["deliveredAt"]


def test_retry_failed(run: Cli) -> None:
    """``retry --failed`` re-queues what had given up, then sends it."""
    with webhook_server([404]) as hook:
        enqueue(run.path, hook.url)
        assert json.loads(ok(run, "retry", fmt="json").stdout)["failed"] == 1
        [failed] = json.loads(ok(run, "list", "--status", "failed", fmt="json").stdout)
        assert failed["lastError"] == "HTTP 404: server says no"
        counts = json.loads(ok(run, "retry", "--failed", fmt="json").stdout)
        assert counts == {"requeued": 1, "delivered": 1, "deferred": 0, "failed": 0, "skipped": 0}


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("retry",), {"TSMETER_SMTP_PORT": "x"}, "TSMETER_SMTP_PORT: must be an integer"),
        (("retry", "--id", "abc"), {}, "--id needs --failed"),
        (("list", "--status", "sent"), {}, "Invalid value for '--status'"),
    ],
)
def test_errors_are_one_line(
    run: Cli, args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    """Bad settings and bad options end in one ``Error:`` line."""
    assert expected in one_line_error(invoke(run, *args, **env))


def test_every_command_has_an_example() -> None:
    """The group and its commands show an example in their help."""
    for command in [notifications, *notifications.commands.values()]:
        assert "Example" in (command.help or ""), command.name
