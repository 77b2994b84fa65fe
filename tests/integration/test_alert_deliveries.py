"""An alert and its notifications are stored together, whoever opens the alert, and a delivery
worker in another process sends them: exactly once per target, to a real SMTP server and a real
webhook receiver, signed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import tsmeter
from tests.notify_servers import free_port, smtp_server, webhook_server
from tsmeter.adapters.sqlite import SQLiteStore
from tsmeter.cli.main import cli
from tsmeter.domain import UsageAlert
from tsmeter.integrations.notify import verify_signature

SECRET = "worker-secret"
ROOT = Path(__file__).resolve().parents[2]


def over_limit(path: Path, emails: list[str], webhook: str) -> datetime:
    """A store at ``path`` where org acme made 11 api_calls today against a daily limit of 10
    that notifies ``emails`` and ``webhook``; returns the time to evaluate at."""
    now = datetime.now(UTC)
    with tsmeter.connect(f"sqlite:///{path}") as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        meter.create_threshold("api_calls", "org", 10, "acme", period_type="DAILY",
                               notify_emails=emails, notify_webhook=webhook)  # fmt: skip
        meter.record_batch([
            {"metricKey": "api_calls", "subjectType": "org", "subjectId": "acme",
             "timestamp": now - timedelta(seconds=i), "id": f"r{i}"} for i in range(11)
        ])  # fmt: skip
    return now


def tsmeter_process(path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tsmeter --store PATH --format json ARGS`` in a new process."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TSMETER_")}
    environ.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "tsmeter", "--store", f"sqlite:///{path}", "--format", "json",
         *args],
        capture_output=True, text=True, timeout=60, env=environ, cwd=ROOT,
    )  # fmt: skip


def cli_json(path: Path, *args: str) -> Any:
    """Run ``tsmeter --store PATH --format json ARGS`` in-process; it must succeed."""
    result = CliRunner().invoke(cli, ["--store", f"sqlite:///{path}", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_alert_evaluate_queues_deliveries(tmp_path: Path) -> None:
    """``alert evaluate`` (no notifier anywhere) leaves one pending delivery per target, which
    ``notifications list`` shows; evaluating again adds none."""
    path = tmp_path / "usage.db"
    over_limit(path, ["ops@acme.test", "cfo@acme.test"], "https://hooks.example.com/acme")
    assert cli_json(path, "alert", "evaluate")["exceeded"] == 1
    assert cli_json(path, "jobs", "run", "evaluate-thresholds")["exceeded"] == 0
    rows = cli_json(path, "notifications", "list")
    assert sorted((r["channel"], r["target"], r["status"]) for r in rows) == [
        ("email", "cfo@acme.test", "pending"),
        ("email", "ops@acme.test", "pending"),
        ("webhook", "https://hooks.example.com/acme", "pending"),
    ]
    assert {r["event"] for r in rows} == {"threshold.exceeded"}


def test_crash_after_opening_loses_nothing(tmp_path: Path) -> None:
    """A process opens the alert through the Python API and dies at once (no close, no
    worker, SMTP down); a new process's ``notifications deliver`` sends each target once."""
    path = tmp_path / "usage.db"
    smtp_port = free_port()  # nothing listens there yet
    with webhook_server() as hook:
        now = over_limit(path, ["ops@acme.test"], hook.url)
        crash = (
            "import os, sys, tsmeter\n"
            "meter = tsmeter.connect(sys.argv[1])\n"
            "print(meter.evaluate_thresholds(now=sys.argv[2]).exceeded, flush=True)\n"
            "os._exit(3)\n"
        )
        died = subprocess.run(
            [sys.executable, "-c", crash, f"sqlite:///{path}", now.isoformat()],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        )  # fmt: skip
        assert (died.returncode, died.stdout.strip()) == (3, "1"), died.stderr
        with smtp_server(port=smtp_port) as smtp:
            sent = tsmeter_process(path, "notifications", "deliver", **worker_env(smtp_port))
            assert sent.returncode == 0, sent.stderr
            assert json.loads(sent.stdout)["delivered"] == 2
            mails = smtp.wait_for(1)
        hits = hook.wait_for(1)
    assert [m.rcpt_tos for m in mails] == [["ops@acme.test"]] and len(hits) == 1


def worker_env(smtp_port: int) -> dict[str, str]:
    """The settings of a delivery worker: plain SMTP on 127.0.0.1:``smtp_port``, signed
    webhooks."""
    return {
        "TSMETER_SMTP_HOST": "127.0.0.1", "TSMETER_SMTP_PORT": str(smtp_port),
        "TSMETER_SMTP_SECURITY": "none", "TSMETER_SMTP_FROM": "alerts@tsmeter.test",
        "TSMETER_WEBHOOK_SECRET": SECRET,
    }  # fmt: skip


def test_worker_in_a_new_process_sends_each_target_once(tmp_path: Path) -> None:
    """Alerts opened by ``alert evaluate`` while nothing receives are sent by a later
    ``notifications deliver`` process: one email, one signed webhook; a second pass and a
    second evaluation send nothing more."""
    path = tmp_path / "usage.db"
    smtp_port = free_port()
    with webhook_server() as hook:
        over_limit(path, ["ops@acme.test"], f"{hook.url}?team=ops")
        opened = tsmeter_process(path, "alert", "evaluate")
        assert json.loads(opened.stdout)["exceeded"] == 1, opened.stderr
        assert hook.hits == []  # opening sends nothing
        env = worker_env(smtp_port)
        with smtp_server(port=smtp_port) as smtp:
            sent = tsmeter_process(path, "notifications", "deliver", **env)
            assert sent.returncode == 0, sent.stderr
            assert json.loads(sent.stdout)["delivered"] == 2
            assert json.loads(tsmeter_process(path, "alert", "evaluate").stdout)["exceeded"] == 0
            again = tsmeter_process(path, "notifications", "deliver", **env)
            assert json.loads(again.stdout)["delivered"] == 0
            mails = smtp.wait_for(1)
        hits = hook.wait_for(1)
    assert len(mails) == 1 and mails[0].rcpt_tos == ["ops@acme.test"]
    assert "exceeded for org acme" in mails[0].message["Subject"]
    assert len(hits) == 1 and hits[0].path == "/hook?team=ops"
    headers = {k.lower(): v for k, v in hits[0].headers.items()}
    assert verify_signature(
        SECRET, hits[0].body, headers["x-tsmeter-timestamp"], headers["x-tsmeter-signature"]
    )
    assert json.loads(hits[0].body)["event"] == "threshold.exceeded"


def test_resolution_is_queued_with_the_resolve(tmp_path: Path) -> None:
    """When usage falls back under the limit (the limit is raised), the monitor resolves the
    alert and queues its threshold.resolved deliveries in the same step."""
    path = tmp_path / "usage.db"
    now = over_limit(path, ["ops@acme.test"], "https://hooks.example.com/acme")
    with tsmeter.connect(f"sqlite:///{path}") as meter:
        assert meter.evaluate_thresholds(now=now).exceeded == 1
        [threshold] = meter.list_thresholds()
        meter.update_threshold(threshold.id, threshold=100)
        assert meter.evaluate_thresholds(now=now).resolved == 1
    rows = cli_json(path, "notifications", "list")
    assert sorted((r["event"], r["channel"]) for r in rows) == [
        ("threshold.exceeded", "email"), ("threshold.exceeded", "webhook"),
        ("threshold.resolved", "email"), ("threshold.resolved", "webhook"),
    ]  # fmt: skip


def test_alert_and_deliveries_commit_together(tmp_path: Path) -> None:
    """If its deliveries cannot be stored, the alert is not opened either (one transaction)."""
    from tsmeter.ports import DeliveryRow  # here: the module's other tests run without it

    store = SQLiteStore(str(tmp_path / "state.db"))
    try:
        alert = UsageAlert(
            threshold_id="t1", metric_key="api_calls", subject_type="org", subject_id="acme",
            level="exceeded", period_start=None, period_end=None, actual_value=11,
            threshold_value=10, percentage=110,
        )  # fmt: skip
        target: Any = None  # NOT NULL in the table: this delivery cannot be stored
        broken = DeliveryRow("d1", alert.id, "threshold.exceeded", "email", target,
                             "api_calls", "org", "acme", "{}")  # fmt: skip
        with pytest.raises(Exception, match="NOT NULL"):
            store.open_alert(alert, 0, [broken])
        assert store.list_alerts() == []
        good = broken._replace(target="ops@acme.test")
        assert store.open_alert(alert, 0, [good])
        assert [a.id for a in store.list_alerts()] == [alert.id]
    finally:
        store.close()
