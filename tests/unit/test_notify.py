"""Notification pieces without servers: settings, signatures, rendering, the delivery log."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError as PydanticError

import tsmeter
import tsmeter.integrations.notify
from tests.delivery_queues import QUEUES, QueuePlace, open_place
from tsmeter.domain import UsageAlert, UsageThreshold
from tsmeter.domain.events import ThresholdApproaching, ThresholdResolved, UsageRecorded
from tsmeter.domain.models import STORED
from tsmeter.domain.targets import mask_url
from tsmeter.errors import ValidationError
from tsmeter.integrations.notify import Notifier, NotifySettings, sign, verify_signature
from tsmeter.integrations.notify.channels import build_email
from tsmeter.integrations.notify.render import email_text, webhook_body

BASE_ENV = {"TSMETER_SMTP_HOST": "mail.example.com", "TSMETER_SMTP_FROM": "a@example.com"}


# -- settings -----------------------------------------------------------------------------
def test_settings_defaults_and_environment() -> None:
    """Every TSMETER_* variable is read; the port follows the security mode."""
    s = NotifySettings.from_env({})
    assert (s.smtp_host, s.email_enabled, s.smtp_security, s.smtp_port) == (
        None, False, "starttls", 587,
    )  # fmt: skip
    s = NotifySettings.from_env({
        **BASE_ENV, "TSMETER_SMTP_SECURITY": "SSL", "TSMETER_SMTP_USER": "u",
        "TSMETER_SMTP_PASSWORD": "p", "TSMETER_SMTP_TIMEOUT": "3.5",
        "TSMETER_WEBHOOK_SECRET": "k", "TSMETER_NOTIFY_RETRIES": "2",
        "TSMETER_NOTIFY_BACKOFF_BASE": "1", "TSMETER_NOTIFY_BACKOFF_MAX": "4",
    })  # fmt: skip
    assert (s.smtp_security, s.smtp_port, s.smtp_user, s.smtp_timeout) == ("ssl", 465, "u", 3.5)
    assert (s.webhook_secret, s.retries, s.backoff_base, s.backoff_max) == ("k", 2, 1.0, 4.0)
    assert NotifySettings.from_env({**BASE_ENV, "TSMETER_SMTP_SECURITY": "none"}).smtp_port == 25
    assert NotifySettings.from_env({"TSMETER_SMTP_PORT": ""}).smtp_port == 587  # empty = unset


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"TSMETER_SMTP_PORT": "smtp"}, "TSMETER_SMTP_PORT"),
        ({"TSMETER_SMTP_PORT": "70000"}, "TSMETER_SMTP_PORT"),
        ({"TSMETER_SMTP_SECURITY": "tls"}, "TSMETER_SMTP_SECURITY"),
        ({"TSMETER_SMTP_HOST": "mail.example.com"}, "TSMETER_SMTP_FROM"),
        ({"TSMETER_SMTP_FROM": "not-an-address"}, "TSMETER_SMTP_FROM"),
        ({"TSMETER_SMTP_FROM": "a@example.com\nBcc: x@y"}, "TSMETER_SMTP_FROM"),
        ({"TSMETER_SMTP_USER": "u"}, "TSMETER_SMTP_PASSWORD"),
        ({"TSMETER_SMTP_TIMEOUT": "0"}, "TSMETER_SMTP_TIMEOUT"),
        ({"TSMETER_WEBHOOK_TIMEOUT": "nan"}, "TSMETER_WEBHOOK_TIMEOUT"),
        ({"TSMETER_NOTIFY_RETRIES": "-1"}, "TSMETER_NOTIFY_RETRIES"),
        ({"TSMETER_NOTIFY_BACKOFF_MAX": "1"}, "TSMETER_NOTIFY_BACKOFF_MAX"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], setting: str) -> None:
    """Each invalid setting is reported as a ValidationError naming its variable."""
    with pytest.raises(ValidationError) as caught:
        NotifySettings.from_env(env)
    assert caught.value.field == setting


def test_settings_repr_hides_secrets() -> None:
    """The SMTP password and the webhook secret never appear in repr()."""
    s = NotifySettings(smtp_user="u", smtp_password="hunter2", webhook_secret="whsec")
    assert "hunter2" not in repr(s) and "whsec" not in repr(s) and "***" in repr(s)


# -- signatures ---------------------------------------------------------------------------
def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    """The documented construction, checked independently with hmac."""
    body = b'{"a":1}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", body, 1700000000) == f"sha256={expected}"
    assert sign("k", body.decode(), 1700000000) == f"sha256={expected}"


@pytest.mark.parametrize(
    ("timestamp", "signature_of", "now", "ok"),
    [
        ("1700000000", "right", 1700000000, True),
        ("1700000000", "right", 1700000300, True),  # at the edge of the tolerance
        ("1700000000", "right", 1700000301, False),  # replayed too late
        ("1700000000", "right", 1699999600, False),  # from the future
        ("1700000001", "right", 1700000000, False),  # timestamp changed
        ("1700000000", "wrong-secret", 1700000000, False),
        ("yesterday", "right", 1700000000, False),
    ],
)
def test_verify_signature(timestamp: str, signature_of: str, now: int, ok: bool) -> None:
    """Signature and freshness are both required."""
    secret = "k" if signature_of == "right" else "other"
    header = sign(secret, b"{}", 1700000000)
    assert verify_signature("k", b"{}", timestamp, header, now=now) is ok


def test_verify_signature_rejects_a_bare_hex_or_garbage() -> None:
    """The ``sha256=`` prefix is part of the value; garbage is just False."""
    header = sign("k", b"{}", 1700000000)
    assert not verify_signature("k", b"{}", 1700000000, header.removeprefix("sha256="), now=1.7e9)
    assert not verify_signature("k", b"{}", 1700000000, "sha256=zz\u00e9", now=1.7e9)


# -- rendering ----------------------------------------------------------------------------
def _alert(level: str, actual: float | Decimal, percentage: float, **extra: object) -> UsageAlert:
    fields: dict[str, object] = {
        "threshold_id": "t1", "metric_key": "storage_gb", "subject_type": "org",
        "subject_id": "org-9", "level": level, "period_start": None, "period_end": None,
        "actual_value": actual, "threshold_value": 1000.0, "percentage": percentage,
    }  # fmt: skip
    fields.update(extra)
    return UsageAlert.model_validate(fields)


def test_subjects_for_each_kind() -> None:
    """Approaching, exceeded and resolved read differently; fractions keep their digits."""
    threshold = UsageThreshold(metric_key="storage_gb", subject_type="org", threshold=1000)
    at = datetime(2026, 3, 1, tzinfo=UTC)
    approaching, body = email_text(
        "threshold.approaching", _alert("approaching", 850.5, 85.05), threshold, at
    )
    assert approaching == (
        "[tsmeter] storage_gb approaching its limit for org org-9: 850.5 of 1,000 (85.05 %)"
    )
    assert "Window:       lifetime (no reset)" in body
    resolved, body = email_text("threshold.resolved", _alert("exceeded", 700, 70), threshold, at)
    assert resolved.startswith("[tsmeter] storage_gb back under its limit for org org-9")
    assert "Level:        exceeded (resolved)" in body


def test_figures_are_exact_decimals() -> None:
    """Email text shows every digit of the exact values (no float noise, nothing rounded);
    the webhook's JSON carries them as decimal strings with the metric's places."""
    threshold = UsageThreshold(
        metric_key="spend", subject_type="org", threshold=Decimal("0.30"),
        warn_threshold=Decimal("0.24"),
    )  # fmt: skip
    actual = Decimal("0.100000") + Decimal("0.200000")  # as floats: 0.30000000000000004
    alert = _alert("exceeded", 0, 100.0, actual_value=actual, threshold_value=Decimal("0.30"))
    at = datetime(2026, 3, 1, tzinfo=UTC)
    subject, body = email_text("threshold.exceeded", alert, threshold, at)
    assert subject.endswith(": 0.3 of 0.3 (100 %)")
    assert "Actual:       0.3\n" in body and "Threshold:    0.3 (warn at 0.24)\n" in body
    big = _alert("exceeded", 0, 100.0, actual_value=Decimal("1234567.000001"),
                 threshold_value=Decimal("1000000.000000"))  # fmt: skip
    subject, _ = email_text("threshold.exceeded", big, threshold, at)
    assert "1,234,567.000001 of 1,000,000 " in subject
    doc = json.loads(webhook_body("threshold.exceeded", "d1", alert, threshold, at))
    assert (doc["alert"]["actualValue"], doc["alert"]["thresholdValue"]) == ("0.300000", "0.30")
    assert (doc["threshold"]["threshold"], doc["threshold"]["warnThreshold"]) == ("0.30", "0.24")
    assert Decimal(doc["alert"]["actualValue"]) == Decimal("0.1") + Decimal("0.2")


def test_email_headers_stay_single_lines() -> None:
    """A hostile subject and header values cannot start a new header line."""
    settings = NotifySettings(smtp_from="alerts@example.com")
    message = build_email(
        settings, "ops@example.com", "hi\r\nBcc: victim@evil.test", "body\n",
        {"X-Tsmeter-Event": "x\nX-Evil: 1"},
    )  # fmt: skip
    raw = message.as_bytes()
    lines = raw.split(b"\n")
    assert not any(line.startswith((b"Bcc:", b"X-Evil:")) for line in lines)
    assert message["Subject"] == "hi\\r\\nBcc: victim@evil.test"


# -- the notifier and its log -------------------------------------------------------------
@pytest.fixture(params=QUEUES)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueuePlace]:
    """The delivery queue of the test: the SQLite log, then the PostgreSQL one."""
    yield from open_place(request, tmp_path)


def _event(emails: list[str], webhook: str | None = None) -> ThresholdApproaching:
    # As read back from a state file: an older version may have stored any target.
    threshold = UsageThreshold.model_validate({
        "metric_key": "storage_gb", "subject_type": "org", "threshold": 1000,
        "notify_emails": emails, "notify_webhook": webhook,
    }, context=STORED)  # fmt: skip
    return ThresholdApproaching(alert=_alert("approaching", 850, 85), threshold=threshold)


def test_handle_logs_one_delivery_per_target(place: QueuePlace) -> None:
    """Each distinct email and the webhook get one pending delivery; repeats add nothing."""
    with place.notifier(NotifySettings()) as notifier:
        event = _event(["a@x.test", "b@x.test", "a@x.test"], "https://hooks.x.test/h?token=1")
        notifier.handle(event)
        notifier.handle(event)
        notifier.handle(UsageRecorded.__new__(UsageRecorded))  # not a threshold event: ignored
        items = notifier.deliveries()
        assert [(d.channel.value, d.target, d.status.value) for d in items] == [
            ("email", "a@x.test", "pending"),
            ("email", "b@x.test", "pending"),
            ("webhook", "https://hooks.x.test/h?token=1", "pending"),
        ]
        assert all(d.event == "threshold.approaching" for d in items)
        assert len({d.id for d in items}) == 3


def test_undeliverable_address_is_failed_at_once(place: QueuePlace) -> None:
    """An address an older version let through, which SMTP cannot take, is logged as failed."""
    with place.notifier(NotifySettings()) as notifier:
        notifier.handle(_event(["ops@x.test>,evil@y.test"]))
        [item] = notifier.deliveries("failed")
        assert item.attempts == 0 and "refused target: one address" in (item.last_error or "")


def test_email_waits_while_smtp_is_not_configured(
    place: QueuePlace, caplog: pytest.LogCaptureFixture
) -> None:
    """No TSMETER_SMTP_HOST: email deliveries stay pending (skipped, with a warning) instead
    of failing, so a pass from a shell without the settings loses nothing."""
    with place.notifier(NotifySettings()) as notifier:
        notifier.handle(_event(["ops@x.test"]))
        counts = notifier.deliver_pending()
        assert (counts.skipped, counts.failed, counts.delivered) == (1, 0, 0)
        [item] = notifier.deliveries()
        assert (item.status, item.attempts) == ("pending", 0)
    assert "email is not configured (set TSMETER_SMTP_HOST)" in caplog.text


def test_status_filter_is_validated(place: QueuePlace) -> None:
    """An unknown status is a ValidationError naming ``status``."""
    with place.notifier(NotifySettings()) as notifier:
        assert notifier.deliveries("DELIVERED") == []
        with pytest.raises(ValidationError, match="status"):
            notifier.deliveries("sent")


def test_resolved_events_are_notified(place: QueuePlace) -> None:
    """threshold.resolved is a separate delivery from the alert's earlier event."""
    with place.notifier(NotifySettings()) as notifier:
        event = _event(["a@x.test"])
        notifier.handle(event)
        notifier.handle(ThresholdResolved(alert=event.alert, threshold=event.threshold))
        assert [d.event for d in notifier.deliveries()] == [
            "threshold.approaching",
            "threshold.resolved",
        ]


def test_public_names() -> None:
    """tsmeter.integrations.notify exports a small, documented API."""
    assert sorted(tsmeter.integrations.notify.__all__) == [
        "Channel", "Delivery", "DeliveryCounts", "DeliveryError", "DeliveryStatus",
        "Notifier", "NotifySettings", "delivery_id", "log_path_of", "sign", "verify_signature",
    ]  # fmt: skip
    for name in tsmeter.integrations.notify.__all__:
        assert (getattr(tsmeter.integrations.notify, name).__doc__ or "").strip(), name


# -- targets ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "field", "problem"),
    [
        ({"notify_webhook": "http://127.0.0.1:99999/x"}, "notifyWebhook", "1 to 65535"),
        ({"notify_webhook": "http://127.0.0.1:0/x"}, "notifyWebhook", "1 to 65535"),
        ({"notify_webhook": "http://[fe80::1]/x"}, "notifyWebhook", "link-local"),
        ({"notify_webhook": "http://2852039166/x"}, "notifyWebhook", "169.254.169.254"),
        ({"notify_webhook": "http://METADATA.google.internal./"}, "notifyWebhook", "metadata"),
        ({"notify_webhook": "http://x.test/\x00"}, "notifyWebhook", "control characters"),
        ({"notify_emails": ["a@x.test b@x.test"]}, "notifyEmails", "one address per entry"),
        ({"notify_emails": ["a@x.test;b@x.test"]}, "notifyEmails", "one address per entry"),
        ({"notify_emails": [f"u{i}@x.test" for i in range(51)]}, "notifyEmails", "at most 50"),
    ],
)
def test_targets_are_checked_on_create_and_update(
    fields: dict[str, object], field: str, problem: str
) -> None:
    """create_threshold and update_threshold refuse a bad target with a ValidationError
    naming the field; nothing is stored."""
    with tsmeter.connect("sqlite:///:memory:") as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        with pytest.raises(ValidationError) as caught:
            meter.create_threshold("api_calls", "org", 10, **fields)
        assert caught.value.field == field and problem in caught.value.problem
        tid = meter.create_threshold("api_calls", "org", 10).id
        with pytest.raises(ValidationError) as caught:
            meter.update_threshold(tid, **fields)
        assert caught.value.field == field
        assert meter.get_threshold(tid).notify_webhook is None


def test_link_local_targets_need_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback and private receivers are fine; a link-local one needs
    TSMETER_NOTIFY_ALLOW_LINK_LOCAL=true, which the delivery settings read too."""
    ok = ["http://127.0.0.1:8080/h", "http://10.1.2.3/h", "https://[::1]:8443/h"]
    for url in ok:
        assert UsageThreshold(metric_key="m", subject_type="org", threshold=1,
                              notify_webhook=url).notify_webhook == url  # fmt: skip
    with pytest.raises(PydanticError, match="link-local"):
        UsageThreshold(metric_key="m", subject_type="org", threshold=1,
                       notify_webhook="http://169.254.169.254/")  # fmt: skip
    monkeypatch.setenv("TSMETER_NOTIFY_ALLOW_LINK_LOCAL", "true")
    assert UsageThreshold(metric_key="m", subject_type="org", threshold=1,
                          notify_webhook="http://169.254.169.254/").notify_webhook  # fmt: skip
    assert NotifySettings.from_env().allow_link_local is True


def test_a_stored_old_target_does_not_break_other_thresholds(tmp_path: Path) -> None:
    """A threshold an older version stored with a now-refused webhook still loads, so the
    monitor keeps evaluating every threshold; its delivery is refused on its own."""
    path = tmp_path / "usage.db"
    with tsmeter.connect(f"sqlite:///{path}") as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        meter.create_threshold("api_calls", "org", 1, "acme")
        meter.record("api_calls", "org", "acme")
    conn = sqlite3.connect(path)
    with conn:
        doc = json.loads(conn.execute("SELECT doc FROM thresholds").fetchone()[0])
        doc["notifyWebhook"] = "http://127.0.0.1:99999/x"
        conn.execute("UPDATE thresholds SET doc = ?", (json.dumps(doc),))
    conn.close()
    with tsmeter.connect(f"sqlite:///{path}") as meter:
        assert meter.evaluate_thresholds().exceeded == 1
        with Notifier.for_meter(meter, NotifySettings(), worker=False) as notifier:
            [item] = notifier.deliveries()
            assert (item.status, item.attempts) == ("failed", 0)
            assert (item.last_error or "").startswith("refused target: is not a valid URL")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@h.test/x?token=t&a=1#frag", "https://u:***@h.test/x?token=***&a=***#***"),
        ("https://u@h.test/x", "https://u@h.test/x"),
        (
            "https://h.test/services/T0AB12CD/abcdefghij0123456789",
            "https://h.test/services/T0AB12CD/***",
        ),
        ("https://h.test/x?flag&k=", "https://h.test/x?flag&k="),
        ("http://h.test:99999/\x1b[2J", "http://h.test:99999/\\x1b[2J"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    """Passwords, query values, fragments and token-like path segments are masked."""
    assert mask_url(url) == shown
