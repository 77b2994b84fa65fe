"""Notifications against real servers: an SMTP server (aiosmtpd) and an HTTP webhook
receiver, both in-process on 127.0.0.1. Backoffs are milliseconds, every wait is bounded."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import tsmeter
from tests.delivery_queues import QUEUES, QueuePlace, open_place
from tests.notify_servers import (
    Certificate,
    free_port,
    make_certificate,
    smtp_server,
    webhook_server,
)
from tsmeter.domain import UsageAlert, UsageThreshold
from tsmeter.domain.events import ThresholdEvent, ThresholdExceeded
from tsmeter.integrations.notify import (
    Delivery,
    Notifier,
    NotifySettings,
    delivery_id,
    verify_signature,
)
from tsmeter.integrations.notify.channels import DeliveryError, check_target
from tsmeter.integrations.notify.log import Channel, NewDelivery

SECRET = "webhook-s3cret"
FROM = "tsmeter alerts <alerts@tsmeter.test>"
SUBJECT = "[tsmeter] api_calls exceeded for org acme: 1,050 of 1,000 (105 %)"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A certificate for 127.0.0.1 signed by a test CA (made in Python: nothing to skip)."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


def settings(smtp_port: int | None = None, **overrides: Any) -> NotifySettings:
    """Fast settings: plain SMTP on ``smtp_port``, tiny backoffs and timeouts."""
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1" if smtp_port else None,
        "smtp_port": smtp_port,
        "smtp_security": "none",
        "smtp_from": FROM,
        "smtp_timeout": 2.0,
        "webhook_secret": SECRET,
        "webhook_timeout": 2.0,
        "retries": 3,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "poll_interval": 0.1,
    }
    values.update(overrides)
    return NotifySettings(**values)


def event(
    emails: tuple[str, ...] = ("ops@acme.test",),
    webhook: str | None = None,
    *,
    subject_id: str = "acme",
    alert_id: str = "alert-1",
) -> ThresholdEvent:
    """A threshold.exceeded event: api_calls at 1,050 of 1,000 for one org in March 2026."""
    threshold = UsageThreshold(
        id="thr-1", metric_key="api_calls", subject_type="org", threshold=1000,
        notify_emails=list(emails), notify_webhook=webhook,
    )  # fmt: skip
    alert = UsageAlert(
        id=alert_id, threshold_id="thr-1", metric_key="api_calls", subject_type="org",
        subject_id=subject_id, level="exceeded",
        period_start=datetime(2026, 3, 1, tzinfo=UTC), period_end=datetime(2026, 4, 1, tzinfo=UTC),
        actual_value=1050, threshold_value=1000, percentage=105.0,
    )  # fmt: skip
    return ThresholdExceeded(alert=alert, threshold=threshold)


@pytest.fixture(params=QUEUES)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueuePlace]:
    """The delivery queue of the test: the SQLite log, then the PostgreSQL one."""
    yield from open_place(request, tmp_path)


@pytest.fixture
def notifiers(place: QueuePlace) -> Callable[..., Notifier]:
    """Make Notifiers on the test's one delivery queue; all are closed at the end."""

    def make(config: NotifySettings, *, worker: bool = False) -> Notifier:
        return place.notifier(config, worker=worker)

    return make


def by_channel(items: list[Delivery]) -> dict[str, Delivery]:
    """Deliveries keyed by channel (one of each in these tests)."""
    return {d.channel.value: d for d in items}


def settle(notifier: Notifier, done: Callable[[list[Delivery]], bool]) -> list[Delivery]:
    """Wait (at most 10 s) until the worker brought the log to the state ``done`` checks."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        items = notifier.deliveries()
        if done(items):
            return items
        time.sleep(0.02)
    raise AssertionError(f"log did not settle: {notifier.deliveries()}")


def nothing_pending(items: list[Delivery]) -> bool:
    """Every delivery is delivered or failed."""
    return bool(items) and all(d.status != "pending" for d in items)


# -- email --------------------------------------------------------------------------------
def test_email_arrives_with_from_to_subject_and_body(notifiers: Callable[..., Notifier]) -> None:
    """Each notify email gets its own message with a clear subject and the alert's details."""
    with smtp_server() as smtp:
        notifier = notifiers(settings(smtp.port))
        notifier.handle(event(("ops@acme.test", "cfo@acme.test")))
        assert notifier.deliver_pending().delivered == 2
        got = sorted(smtp.received, key=lambda r: r.rcpt_tos)
    assert [r.rcpt_tos for r in got] == [["cfo@acme.test"], ["ops@acme.test"]]
    first = got[1]
    assert first.mail_from == "alerts@tsmeter.test"
    message = first.message
    assert message["From"] == FROM
    assert message["To"] == "ops@acme.test"
    assert message["Subject"] == SUBJECT
    assert message["Auto-Submitted"] == "auto-generated"
    expected_id = delivery_id("alert-1", "threshold.exceeded", "email", "ops@acme.test")
    assert message["X-Tsmeter-Delivery"] == expected_id
    assert message["Message-ID"] == f"<{expected_id}@tsmeter.invalid>"
    body = message.get_content()
    for line in [
        "Metric:       api_calls",
        "Subject:      org acme",
        "Level:        exceeded",
        "Actual:       1,050",
        "Threshold:    1,000 (warn at 800)",
        "Percentage:   105 %",
        "Window:       2026-03-01T00:00:00Z to 2026-04-01T00:00:00Z (UTC, end excluded)",
        "Alert id:     alert-1",
    ]:
        assert line in body.splitlines(), line
    logged = notifier.deliveries()
    assert [(d.status, d.attempts, d.last_error) for d in logged] == [("delivered", 1, None)] * 2


def test_starttls_with_login(notifiers: Callable[..., Notifier], cert: Certificate) -> None:
    """STARTTLS against a server that requires it, then AUTH with the configured user."""
    with smtp_server(starttls=cert, credentials=("mailer", "pw-1")) as smtp:
        config = settings(smtp.port, smtp_security="starttls", smtp_ca_file=str(cert.cert),
                          smtp_user="mailer", smtp_password="pw-1")  # fmt: skip
        notifier = notifiers(config)
        notifier.handle(event())
        assert notifier.deliver_pending().delivered == 1
    [received] = smtp.received
    assert received.tls and received.login == "mailer"
    assert [user for _, user, _ in smtp.logins] == ["mailer"]
    assert received.message["Subject"] == SUBJECT


def test_implicit_tls(notifiers: Callable[..., Notifier], cert: Certificate) -> None:
    """smtp_security=ssl speaks TLS from the first byte (port 465 style)."""
    with smtp_server(implicit_tls=cert) as smtp:
        config = settings(smtp.port, smtp_security="ssl", smtp_ca_file=str(cert.cert))
        notifier = notifiers(config)
        notifier.handle(event())
        assert notifier.deliver_pending().delivered == 1
    assert len(smtp.received) == 1


def test_untrusted_certificate_is_refused(
    notifiers: Callable[..., Notifier], cert: Certificate
) -> None:
    """Without the CA the certificate fails verification: failed at once, nothing sent."""
    with smtp_server(starttls=cert) as smtp:
        notifier = notifiers(settings(smtp.port, smtp_security="starttls"))
        notifier.handle(event())
        assert notifier.deliver_pending().failed == 1
    [failed] = notifier.deliveries("failed")
    assert failed.attempts == 1 and "certificate" in (failed.last_error or "")
    assert smtp.received == []


def test_wrong_password_fails_at_once(
    notifiers: Callable[..., Notifier], cert: Certificate
) -> None:
    """A 535 from AUTH is permanent: recorded as failed with the server's answer."""
    with smtp_server(starttls=cert, credentials=("mailer", "right")) as smtp:
        config = settings(smtp.port, smtp_security="starttls", smtp_ca_file=str(cert.cert),
                          smtp_user="mailer", smtp_password="wrong")  # fmt: skip
        notifier = notifiers(config)
        notifier.handle(event())
        assert notifier.deliver_pending().failed == 1
    [failed] = notifier.deliveries()
    assert failed.status == "failed" and (failed.last_error or "").startswith("SMTP 535")


def test_temporary_smtp_failure_is_retried(notifiers: Callable[..., Notifier]) -> None:
    """A 451 after DATA is temporary: the worker retries and the message arrives once."""
    with smtp_server() as smtp:
        smtp.fail_next = 2
        notifier = notifiers(settings(smtp.port), worker=True)
        notifier.handle(event())
        [done] = settle(notifier, nothing_pending)
        assert len(smtp.wait_for(1)) == 1
    assert (done.status, done.attempts) == ("delivered", 3)


def test_hostile_subject_id_cannot_add_headers(notifiers: Callable[..., Notifier]) -> None:
    """CR/LF in a subject id shows up escaped in the subject; no header or recipient is added."""
    hostile = "acme\r\nBcc: victim@evil.test\r\nX-Injected: yes"
    with smtp_server() as smtp:
        notifier = notifiers(settings(smtp.port))
        notifier.handle(event(subject_id=hostile))
        assert notifier.deliver_pending().delivered == 1
    [received] = smtp.received
    assert received.rcpt_tos == ["ops@acme.test"]
    message = received.message
    assert message["Bcc"] is None and message["X-Injected"] is None
    assert message["Subject"].startswith(
        "[tsmeter] api_calls exceeded for org acme\\r\\nBcc: victim@evil.test\\r\\nX-Injected"
    )
    assert "Subject:      org acme\\r\\nBcc: victim@evil.test" in message.get_content()


def test_non_ascii_subject_id(notifiers: Callable[..., Notifier]) -> None:
    """Non-ASCII user data arrives intact in the subject and the body."""
    with smtp_server() as smtp:
        notifier = notifiers(settings(smtp.port))
        notifier.handle(event(subject_id="Zürich café 東京"))
        assert notifier.deliver_pending().delivered == 1
    [received] = smtp.received
    assert "for org Zürich café 東京:" in received.message["Subject"]
    assert "Subject:      org Zürich café 東京" in received.message.get_content()


# -- webhooks -----------------------------------------------------------------------------
def test_webhook_is_signed_and_verifiable(notifiers: Callable[..., Notifier]) -> None:
    """The POST carries the tsmeter headers; its signature verifies with the shared secret."""
    with webhook_server() as hook:
        notifier = notifiers(settings())
        notifier.handle(event(emails=(), webhook=hook.url))
        assert notifier.deliver_pending().delivered == 1
        [hit] = hook.hits
    headers = {k.lower(): v for k, v in hit.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["x-tsmeter-event"] == "threshold.exceeded"
    assert headers["x-tsmeter-delivery"] == delivery_id(
        "alert-1", "threshold.exceeded", "webhook", hook.url
    )
    timestamp, signature = headers["x-tsmeter-timestamp"], headers["x-tsmeter-signature"]
    assert abs(int(timestamp) - time.time()) < 60
    assert verify_signature(SECRET, hit.body, timestamp, signature)
    assert not verify_signature("another-secret", hit.body, timestamp, signature)
    assert not verify_signature(SECRET, hit.body + b" ", timestamp, signature)
    assert not verify_signature(SECRET, hit.body, timestamp, signature, now=int(timestamp) + 301)
    doc = json.loads(hit.body)
    assert doc["event"] == "threshold.exceeded" and doc["id"] == headers["x-tsmeter-delivery"]
    assert doc["alert"]["subjectId"] == "acme" and doc["alert"]["actualValue"] == "1050"
    assert doc["threshold"]["metricKey"] == "api_calls"
    assert datetime.fromisoformat(doc["occurredAt"]).tzinfo is not None


def test_webhook_500_twice_then_200(notifiers: Callable[..., Notifier]) -> None:
    """Two 500s are retried with backoff: delivered once, on attempt 3, same id and body."""
    with webhook_server([500, 500]) as hook:
        notifier = notifiers(settings(), worker=True)
        notifier.handle(event(emails=(), webhook=hook.url))
        [done] = settle(notifier, nothing_pending)
        hits = hook.wait_for(3)
    assert (done.status, done.attempts, done.last_error) == ("delivered", 3, None)
    assert len(hits) == 3
    assert len({h.headers["X-Tsmeter-Delivery"] for h in hits}) == 1
    assert len({h.body for h in hits}) == 1


def test_failing_webhook_does_not_stop_email(
    notifiers: Callable[..., Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    """A webhook that always answers 500 ends failed (error visible, logged) after its
    retries; the email of the same event is delivered."""
    caplog.set_level(logging.WARNING, logger="tsmeter.notify")
    with smtp_server() as smtp, webhook_server(default=500) as hook:
        notifier = notifiers(settings(smtp.port, retries=2), worker=True)
        notifier.handle(event(webhook=hook.url))
        items = by_channel(settle(notifier, nothing_pending))
        assert len(hook.hits) == 3
    assert items["email"].status == "delivered" and len(smtp.received) == 1
    webhook = items["webhook"]
    assert (webhook.status, webhook.attempts) == ("failed", 3)
    assert webhook.last_error == "HTTP 500: server says no"
    failures = [r for r in caplog.records if r.name == "tsmeter.notify" and "failed" in r.message]
    assert any(r.levelno == logging.ERROR and "after 3 attempt(s)" in r.message for r in failures)
    assert all("/hook" not in r.getMessage() for r in failures)  # the URL path is not logged


def test_webhook_client_error_fails_at_once(notifiers: Callable[..., Notifier]) -> None:
    """A 4xx other than 429 is not retried."""
    with webhook_server(default=404) as hook:
        notifier = notifiers(settings())
        notifier.handle(event(emails=(), webhook=hook.url))
        assert notifier.deliver_pending().failed == 1
        assert len(hook.hits) == 1
    [failed] = notifier.deliveries()
    assert (failed.status, failed.attempts, failed.last_error) == (
        "failed",
        1,
        "HTTP 404: server says no",
    )


def test_429_is_retried(notifiers: Callable[..., Notifier]) -> None:
    """429 Too Many Requests is temporary."""
    with webhook_server([429]) as hook:
        notifier = notifiers(settings())
        notifier.handle(event(emails=(), webhook=hook.url))
        assert notifier.deliver_pending().deferred == 1
        later = datetime.now(UTC) + timedelta(seconds=5)
        assert notifier.deliver_pending(now=later).delivered == 1
        assert len(hook.hits) == 2


def test_hanging_webhook_times_out_without_holding_up_email(
    notifiers: Callable[..., Notifier],
) -> None:
    """handle() returns at once; the email goes out while the webhook hangs; the webhook
    attempt times out, is retried later and then delivered."""
    with smtp_server() as smtp, webhook_server([0]) as hook:
        notifier = notifiers(settings(smtp.port, webhook_timeout=0.5))
        started = time.monotonic()
        notifier.handle(event(webhook=hook.url))
        assert time.monotonic() - started < 0.5
        started = time.monotonic()
        counts = notifier.deliver_pending()
        elapsed = time.monotonic() - started
        assert (counts.delivered, counts.deferred) == (1, 1)
        assert 0.4 < elapsed < 3
        webhook = by_channel(notifier.deliveries())["webhook"]
        assert webhook.status == "pending" and webhook.last_error == "webhook: timed out"
        assert len(smtp.received) == 1
        later = datetime.now(UTC) + timedelta(seconds=5)
        assert notifier.deliver_pending(now=later).delivered == 1


def test_close_is_bounded_while_a_webhook_hangs(notifiers: Callable[..., Notifier]) -> None:
    """close(timeout) returns in about that time even while an attempt hangs."""
    with webhook_server([0]) as hook:
        notifier = notifiers(settings(webhook_timeout=2.0), worker=True)
        notifier.handle(event(emails=(), webhook=hook.url))
        hook.wait_for(1)
        started = time.monotonic()
        assert notifier.close(timeout=0.2) is False
        assert time.monotonic() - started < 1.0


# -- idempotency and restarts -------------------------------------------------------------
def test_duplicate_events_deliver_once(notifiers: Callable[..., Notifier]) -> None:
    """The same alert and event published again (even later, as after a restart) adds nothing."""
    with smtp_server() as smtp, webhook_server() as hook:
        notifier = notifiers(settings(smtp.port))
        notifier.handle(event(webhook=hook.url))
        notifier.handle(event(webhook=hook.url))
        assert len(notifier.deliveries()) == 2
        assert notifier.deliver_pending().delivered == 2
        notifier.handle(event(webhook=hook.url))  # after delivery too
        assert notifier.deliver_pending().delivered == 0
        assert (len(smtp.received), len(hook.hits)) == (1, 1)


def test_restart_sends_pending_and_nothing_twice(notifiers: Callable[..., Notifier]) -> None:
    """Deliveries still pending when a Notifier stops go out from a new one on the same log;
    what was delivered before is not sent again, even if the event comes again."""
    port = free_port()  # nothing listens there yet: SMTP is "down"
    config = settings(port)
    with webhook_server() as hook:
        first = notifiers(config)
        first.handle(event(webhook=hook.url))
        counts = first.deliver_pending()
        assert (counts.delivered, counts.deferred) == (1, 1)
        assert by_channel(first.deliveries())["email"].status == "pending"
        first.close()

        with smtp_server(port=port) as smtp:
            second = notifiers(config, worker=True)
            items = by_channel(settle(second, nothing_pending))
            assert (items["email"].status, items["email"].attempts) == ("delivered", 2)
            second.handle(event(webhook=hook.url))
            second.close()
            third = notifiers(config)
            third.handle(event(webhook=hook.url))
            assert third.deliver_pending().delivered == 0
            assert len(smtp.received) == 1
        assert len(hook.hits) == 1


def test_failed_deliveries_can_be_requeued(notifiers: Callable[..., Notifier]) -> None:
    """retry_failed() makes failed deliveries pending again (e.g. after fixing settings)."""
    with webhook_server([404]) as hook:
        notifier = notifiers(settings())
        notifier.handle(event(emails=(), webhook=hook.url))
        assert notifier.deliver_pending().failed == 1
        assert notifier.retry_failed() == 1
        assert notifier.deliver_pending().delivered == 1
    [done] = notifier.deliveries()
    assert (done.status, done.attempts) == ("delivered", 1)


def test_meter_threshold_events_reach_email_and_webhook(tmp_path: Path) -> None:
    """End to end: the monitor's threshold.exceeded on a Meter becomes an email and a webhook,
    logged in the Meter's own state file; evaluating again sends nothing more."""
    with (
        smtp_server() as smtp,
        webhook_server() as hook,
        tsmeter.connect(f"sqlite:///{tmp_path / 'usage.db'}") as meter,
    ):
        meter.define_metric("api_calls", aggregation_type="COUNT")
        targets = {"notify_emails": ["ops@acme.test"], "notify_webhook": hook.url}
        meter.create_threshold("api_calls", "org", 10, "acme", period_type="DAILY", **targets)
        now = datetime.now(UTC)
        meter.record_batch([
            {"metricKey": "api_calls", "subjectType": "org", "subjectId": "acme",
             "timestamp": now - timedelta(seconds=i), "id": f"r{i}"} for i in range(11)
        ])  # fmt: skip
        notifier = Notifier.for_meter(meter, settings(smtp.port), worker=False)
        try:
            assert meter.evaluate_thresholds(now=now).exceeded == 1
            assert notifier.deliver_pending().delivered == 2
            assert meter.evaluate_thresholds(now=now).exceeded == 0
            assert notifier.deliver_pending().delivered == 0
        finally:
            notifier.close()
        assert str(tmp_path / "usage.db") in meter.catalog.path  # type: ignore[attr-defined]
        assert smtp.received[0].message["Subject"] == (
            "[tsmeter] api_calls exceeded for org acme: 11 of 10 (110 %)"
        )
        assert json.loads(hook.hits[0].body)["alert"]["actualValue"] == "11"


# -- targets that cannot be delivered to --------------------------------------------------
def plant(place: QueuePlace, *targets: str) -> None:
    """Queue one webhook delivery per target straight into the log, as an older version that
    checked nothing could have left them."""
    log = place.queue()
    try:
        log.enqueue([
            NewDelivery(id=f"d{i}", alert_id=f"a{i}", event="threshold.exceeded",
                        channel=Channel.WEBHOOK, target=url, metric_key="api_calls",
                        subject_type="org", subject_id="acme", payload="{}")
            for i, url in enumerate(targets)
        ], time.time_ns())  # fmt: skip
    finally:
        log.close()


def test_one_bad_target_never_stops_the_pass(
    place: QueuePlace, notifiers: Callable[..., Notifier]
) -> None:
    """Targets no delivery can reach (a port out of range, a metadata address, a malformed
    URL) each fail on their own first attempt with the reason; the good one is delivered and
    nothing stays claimed or pending."""
    with webhook_server() as hook:
        plant(place, "http://127.0.0.1:99999/x", hook.url,
              "http://169.254.169.254/latest/meta-data/", "http://[::1/x",
              "http://127.0.0.1:1/\r\nX-Evil: 1")  # fmt: skip
        notifier = notifiers(settings())
        counts = notifier.deliver_pending()
        assert (counts.delivered, counts.failed, counts.deferred) == (1, 4, 0)
        assert len(hook.hits) == 1
    items = {d.target: d for d in notifier.deliveries()}
    assert items[hook.url].status == "delivered"
    for target, item in items.items():
        if target != hook.url:
            assert (item.status, item.attempts) == ("failed", 1), target
            assert (item.last_error or "").startswith("refused target: "), item.last_error
    assert "link-local or cloud metadata" in (
        items["http://169.254.169.254/latest/meta-data/"].last_error or ""
    )


def test_link_local_target_allowed_by_configuration_passes_the_delivery_check() -> None:
    """With allow_link_local a link-local address is no longer refused at delivery time; without
    it, it is. Only the check runs: no traffic goes to an address outside the loopback range."""
    url = "http://169.254.0.1:9/x"
    target = check_target(url, allow_link_local=True)
    assert target.addresses == ("169.254.0.1",)
    with pytest.raises(DeliveryError, match="refused target"):
        check_target(url, allow_link_local=False)


def test_userinfo_is_sent_as_basic_auth_and_never_logged(
    tmp_path: Path, notifiers: Callable[..., Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    """A URL's ``user:password`` becomes an Authorization header (not part of the request
    line); the stored target is unchanged and the log shows no secret."""
    caplog.set_level(logging.DEBUG, logger="tsmeter.notify")
    with webhook_server([500]) as hook:
        url = hook.url.replace("http://", "http://bot:pa55%40w0rd@") + "?token=tok-s3cret"
        notifier = notifiers(settings())
        notifier.handle(event(emails=(), webhook=url))
        assert notifier.deliver_pending().deferred == 1
        later = datetime.now(UTC) + timedelta(seconds=5)
        assert notifier.deliver_pending(now=later).delivered == 1
        hits = hook.wait_for(2)
    assert {h.headers["Authorization"] for h in hits} == {"Basic Ym90OnBhNTVAdzByZA=="}
    assert hits[0].path == "/hook?token=tok-s3cret"
    assert notifier.deliveries()[0].target == url
    assert "pa55" not in caplog.text and "tok-s3cret" not in caplog.text
    assert "bot:***@" in json.loads(hits[0].body)["threshold"]["notifyWebhook"]
