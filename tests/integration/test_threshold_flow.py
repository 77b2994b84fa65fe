"""Thresholds end to end: usage over 80 % and 100 % in two monthly windows, the monitor and
the notifier restarted before every evaluation, a real SMTP server and a real webhook
receiver; then a record refused by the BLOCK limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import tsmeter
from tests.notify_servers import smtp_server, webhook_server
from tsmeter.domain.events import ThresholdEvent
from tsmeter.errors import QuotaExceededError
from tsmeter.integrations.notify import Notifier, NotifySettings, verify_signature

SECRET = "flow-secret"


def test_one_event_email_and_signed_webhook_per_level_and_window(tmp_path: Path) -> None:
    """Each window gets exactly one approaching and one exceeded event, each one email and one
    webhook whose signature verifies; the limit then refuses an enforced record."""
    now = datetime.now(UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (this_month + timedelta(days=32)).replace(day=1)
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    seen: list[ThresholdEvent] = []
    with smtp_server() as smtp, webhook_server() as hook:
        config = NotifySettings(
            smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none",
            smtp_from="alerts@tsmeter.test", webhook_secret=SECRET, retries=3,
            backoff_base=0.01, backoff_max=0.05,
        )  # fmt: skip
        with tsmeter.connect(url) as meter:
            meter.define_metric("api_calls", aggregation_type="COUNT", reset_period="MONTHLY")
            meter.create_threshold(
                "api_calls", "org", 100, "acme", action="BLOCK",
                notify_emails=["ops@acme.test"], notify_webhook=f"{hook.url}?team=ops",
            )  # fmt: skip
        steps = [(this_month, 50), (this_month, 35), (this_month, 5), (this_month, 20),
                 (next_month, 79), (next_month, 2), (next_month, 30)]  # fmt: skip
        for step, (month, n) in enumerate(steps):
            with tsmeter.connect(url) as meter:  # a restarted monitor and notifier every time
                meter.subscribe(ThresholdEvent, seen.append)
                notifier = Notifier.for_meter(meter, config, worker=False)
                try:
                    meter.record_batch([
                        {"id": f"s{step}-{i}", "metricKey": "api_calls", "subjectType": "org",
                         "subjectId": "acme", "timestamp": month + timedelta(hours=1, seconds=i)}
                        for i in range(n)
                    ])  # fmt: skip
                    at = now if month == this_month else next_month + timedelta(days=1)
                    meter.evaluate_thresholds(now=at)
                    meter.evaluate_thresholds(now=at)
                    assert notifier.deliver_pending().failed == 0
                finally:
                    notifier.close(timeout=5)
        with tsmeter.connect(url) as meter:
            with pytest.raises(QuotaExceededError, match="110 of 100"):
                meter.record("api_calls", "org", "acme", id="one-too-many", enforce=True)
            assert meter.get_usage_summary("api_calls", "org", "acme").total_quantity == 110
            assert meter.check("api_calls", "org", "acme").remaining == 0.0
        mails = smtp.wait_for(4)
        hits = hook.wait_for(4)

    expected = [
        (f"threshold.{level}", month)
        for month in (this_month, next_month)
        for level in ("approaching", "exceeded")
    ]
    assert [(e.name, e.alert.period_start) for e in seen] == expected
    assert len(mails) == 4 and len(hits) == 4
    assert [m.message["Subject"].split()[2] for m in mails] == [
        "approaching", "exceeded", "approaching", "exceeded"
    ]  # fmt: skip
    assert all(m.rcpt_tos == ["ops@acme.test"] for m in mails)
    for hit, (name, start) in zip(hits, expected, strict=True):
        assert hit.path.endswith("?team=ops")
        headers = {k.lower(): v for k, v in hit.headers.items()}
        assert verify_signature(
            SECRET, hit.body, headers["x-tsmeter-timestamp"], headers["x-tsmeter-signature"]
        )
        assert not verify_signature(
            "wrong", hit.body, headers["x-tsmeter-timestamp"], headers["x-tsmeter-signature"]
        )
        body = json.loads(hit.body)
        assert headers["x-tsmeter-event"] == name
        assert body["alert"]["periodStart"].startswith(start.strftime("%Y-%m-%dT00:00:00"))
