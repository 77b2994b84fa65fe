"""``tsmeter notifications``: listing the delivery log and retrying, on a real store file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import tsmeter
from tests.cli.conftest import Cli, one_line_error
from tests.notify_servers import webhook_server
from tsmeter.cli.main import TsmeterGroup, cli
from tsmeter.cli.notifications import notifications
from tsmeter.domain import UsageAlert, UsageThreshold
from tsmeter.domain.events import ThresholdExceeded
from tsmeter.domain.models import STORED
from tsmeter.integrations.notify import Notifier, NotifySettings
from tsmeter.integrations.notify.log import Channel, DeliveryLog, NewDelivery

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
    """Log one webhook delivery for a threshold.exceeded event into the store at ``path`` (the
    threshold as read back from a state file: any URL an older version stored)."""
    threshold = UsageThreshold.model_validate(
        {"metric_key": "api_calls", "subject_type": "org", "threshold": 10,
         "notify_webhook": url}, context=STORED,
    )  # fmt: skip
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


SECRET_URL_PARTS = ("pa55-w0rd", "tok-s3cret", "x9Y8z7W6v5U4t3S2r1Q0")


def test_targets_are_masked_wherever_shown(run: Cli) -> None:
    """A webhook URL with a password, a token query value and a token-like path segment is
    shown masked by ``notifications list`` (table, JSON, CSV) and ``threshold list``; the
    stored URL is unchanged: ``deliver`` uses it (Basic auth, the full path and query)."""
    with webhook_server() as hook:
        url = hook.url.replace("http://", "http://bot:pa55-w0rd@")
        url += "/x9Y8z7W6v5U4t3S2r1Q0?token=tok-s3cret&team=ops"
        enqueue(run.path, url)
        with tsmeter.connect(f"sqlite:///{run.path}") as meter:
            meter.define_metric("api_calls", aggregation_type="COUNT")
            meter.create_threshold("api_calls", "org", 10, notify_webhook=url)
        outputs = [ok(run, "list", fmt=fmt).stdout for fmt in (None, "json", "csv")]
        shown = CliRunner().invoke(root, ["--store", run.store, "--format", "json", "threshold",
                                          "list"])  # fmt: skip
        outputs.append(shown.stdout)
        for output in outputs:
            assert not any(secret in output for secret in SECRET_URL_PARTS), output
        [row] = json.loads(outputs[1])
        assert row["target"] == hook.url.replace("http://", "http://bot:***@") + (
            "/***?token=***&team=***"
        )
        assert json.loads(shown.stdout)[0]["notifyWebhook"] == row["target"]
        assert json.loads(ok(run, "deliver", fmt="json").stdout)["delivered"] == 1
        [hit] = hook.hits
    assert hit.path == "/hook/x9Y8z7W6v5U4t3S2r1Q0?token=tok-s3cret&team=ops"
    assert hit.headers["Authorization"] == "Basic Ym90OnBhNTUtdzByZA=="


def test_deliver_goes_on_past_a_bad_target(run: Cli) -> None:
    """A delivery to ``http://127.0.0.1:99999/x`` left in the log by an older version fails
    alone (attempt counted, reason kept); ``deliver`` exits 0 and the good one is sent."""
    with webhook_server() as hook:
        enqueue(run.path, hook.url)
        log = DeliveryLog(str(run.path))  # pending, as an older version queued it
        log.enqueue([NewDelivery("d-old", "a-old", "threshold.exceeded", Channel.WEBHOOK,
                                 "http://127.0.0.1:99999/x", "api_calls", "org", "acme", "{}")],
                    time.time_ns())  # fmt: skip
        log.close()
        result = ok(run, "deliver")
        assert result.stdout.strip() == "Delivered 1, deferred 0, failed 1."
        assert "Traceback" not in result.output and len(hook.hits) == 1
    rows = {r["target"]: r for r in json.loads(ok(run, "list", fmt="json").stdout)}
    bad = rows["http://127.0.0.1:99999/x"]
    assert (bad["status"], bad["attempts"]) == ("failed", 1)
    assert bad["lastError"].startswith("refused target: is not a valid URL")
    assert rows[hook.url]["status"] == "delivered"


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--notify-webhook", "http://127.0.0.1:99999/x", "ports are 1 to 65535"),
        ("--notify-webhook", "http://169.254.169.254/latest/meta-data/", "metadata address"),
        ("--notify-webhook", "http://metadata.google.internal/x", "metadata host"),
        ("--notify-webhook", "http://[fd00:ec2::254]/x", "metadata address"),
        ("--notify-webhook", "http://x.test/a\r\nX-Evil: 1", "control characters"),
        ("--notify-webhook", "https://x.test/" + "a" * 3000, "at most 2048 characters"),
        ("--notify-webhook", "https:///no-host", "must name a host"),
        ("--notify-email", "ops@x.test,cfo@x.test", "one address per entry"),
        ("--notify-email", "ops@x.test\x00", "control characters"),
        ("--notify-email", "a" * 300 + "@x.test", "at most 254 characters"),
    ],
)
def test_bad_targets_are_refused_at_create_and_update(
    run: Cli, option: str, value: str, problem: str
) -> None:
    """threshold create and update refuse a bad target with one ``Error:`` line naming the
    field; the URL itself (it may carry a token) is not echoed."""
    with tsmeter.connect(f"sqlite:///{run.path}") as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        tid = meter.create_threshold("api_calls", "org", 10).id
    base = ["--store", run.store]
    field = "notifyWebhook" if option == "--notify-webhook" else "notifyEmails"
    for args in (["threshold", "create", "api_calls", "org", "10"], ["threshold", "update", tid]):
        error = one_line_error(CliRunner().invoke(root, [*base, *args, option, value]))
        assert error.startswith(f"Error: {field}: ") and problem in error, error
        if option == "--notify-webhook":
            assert value[:30] not in error
    with tsmeter.connect(f"sqlite:///{run.path}") as meter:
        [kept] = meter.list_thresholds()
        assert (kept.notify_emails, kept.notify_webhook) == ([], None)
