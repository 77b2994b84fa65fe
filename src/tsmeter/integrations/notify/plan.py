"""Which deliveries a threshold event makes: one per notify email and one for the webhook,
rendered once so every retry sends the same content. Pure: no I/O, so the monitor can store
them in the transaction that opens (or resolves) the alert.
"""

from __future__ import annotations

import json
import uuid

from tsmeter.domain.events import ThresholdEvent
from tsmeter.domain.targets import check_email, check_webhook_url
from tsmeter.errors import ValidationError
from tsmeter.integrations.notify.log import Channel, NewDelivery
from tsmeter.integrations.notify.render import email_text, webhook_body

__all__ = ["deliveries_for", "delivery_id"]

_NAMESPACE = uuid.UUID("6f1c2b0e-5d43-4b8e-9a51-0c7e3f2d9b14")


def delivery_id(alert_id: str, event_name: str, channel: str, target: str) -> str:
    """The delivery's id: the same for the same (alert, event, channel, target) everywhere,
    so a receiver can drop duplicates by ``X-Tsmeter-Delivery``.

    >>> delivery_id("a1", "threshold.exceeded", "webhook", "https://x.test/h") == \\
    ...     delivery_id("a1", "threshold.exceeded", "webhook", "https://x.test/h")
    True
    """
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join((alert_id, event_name, channel, target))))


def _refusal(channel: Channel, target: str) -> str | None:
    """Why ``target`` cannot be delivered to, by its form alone (a threshold stored by an
    older version may hold one); the address policy is applied when it is sent."""
    try:
        if channel is Channel.EMAIL:
            check_email(target)
        else:
            check_webhook_url(target, allow_link_local=True)
    except ValidationError as exc:
        return f"refused target: {exc.problem}"
    return None


def deliveries_for(event: ThresholdEvent) -> list[NewDelivery]:
    """The deliveries of ``event``: one per distinct notify email and one for the webhook; a
    target that is not deliverable is planned as failed (with the reason), never dropped.

    Example: ``deliveries_for(ThresholdExceeded(alert=a, threshold=t))``.
    """
    alert, threshold, name = event.alert, event.threshold, event.name
    common = {
        "alert_id": alert.id, "event": name, "metric_key": alert.metric_key,
        "subject_type": alert.subject_type, "subject_id": alert.subject_id,
    }  # fmt: skip
    items: list[NewDelivery] = []
    emails = list(dict.fromkeys(e.strip() for e in threshold.notify_emails if e.strip()))
    payload = ""
    if emails:
        subject, body = email_text(name, alert, threshold, event.occurred_at)
        payload = json.dumps({"subject": subject, "body": body}, ensure_ascii=False)
    for email in emails:
        items.append(NewDelivery(
            id=delivery_id(alert.id, name, Channel.EMAIL, email), channel=Channel.EMAIL,
            target=email, payload=payload, error=_refusal(Channel.EMAIL, email), **common,
        ))  # fmt: skip
    if threshold.notify_webhook:
        url = threshold.notify_webhook
        did = delivery_id(alert.id, name, Channel.WEBHOOK, url)
        body = webhook_body(name, did, alert, threshold, event.occurred_at)
        items.append(NewDelivery(
            id=did, channel=Channel.WEBHOOK, target=url, payload=body,
            error=_refusal(Channel.WEBHOOK, url), **common,
        ))  # fmt: skip
    return items
