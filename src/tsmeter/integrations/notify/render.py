"""What a notification says: the email subject and text, and the webhook's JSON body.

Everything here is rendered once, when the event is enqueued, and stored in the
delivery log, so every retry (and a restarted process) sends the same content.

>>> one_line("acme\\r\\nBcc: victim@example.com")
'acme\\\\r\\\\nBcc: victim@example.com'
>>> quantity(Decimal("1050.000000")), quantity(Decimal("2.500000")), percent(105.0)
('1,050', '2.5', '105 %')

Quantities are exact: the email shows every significant digit of the Decimal (its
trailing zeros dropped, nothing rounded), the webhook's JSON carries decimal strings
with the metric's places (``"1050.000000"``).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tsmeter.domain import UsageAlert, UsageThreshold
from tsmeter.domain.targets import mask_url

__all__ = ["email_text", "one_line", "percent", "quantity", "webhook_body"]

# C0/C1 controls, line and paragraph separators, and the bidi overrides that can make
# a subject read differently from what it says.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_VERBS = {
    "threshold.approaching": "approaching its limit",
    "threshold.exceeded": "exceeded",
    "threshold.resolved": "back under its limit",
}


def one_line(text: str) -> str:
    """``text`` with every control or line-breaking character shown as an escape, so that
    user data cannot add header lines or fake body lines."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def quantity(value: Decimal | float) -> str:
    """An exact number with thousands separators: every digit of the value, without the
    trailing zeros of its fraction (a float by its shortest repr); never rounded.

    >>> quantity(Decimal("1234567.000100")), quantity(Decimal("-0.000001")), quantity(7)
    ('1,234,567.0001', '-0.000001', '7')
    """
    number = value if isinstance(value, Decimal) else Decimal(repr(value))
    if not number.is_finite():
        return str(number)
    text = format(number, ",f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def percent(value: float) -> str:
    """A percentage such as ``105 %`` or ``85.5 %``."""
    return f"{quantity(round(value, 2))} %"


def _iso(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def email_text(
    event_name: str, alert: UsageAlert, threshold: UsageThreshold, occurred_at: datetime
) -> tuple[str, str]:
    """``(subject, body)`` of the email for one threshold event.

    Example subject: ``[tsmeter] api_calls exceeded for org acme: 1,050 of 1,000 (105 %)``.
    """
    metric = one_line(alert.metric_key)
    subject_ref = f"{one_line(alert.subject_type)} {one_line(alert.subject_id)}"
    figures = (
        f"{quantity(alert.actual_value)} of {quantity(alert.threshold_value)} "
        f"({percent(alert.percentage)})"
    )
    verb = _VERBS.get(event_name, one_line(event_name))
    subject = f"[tsmeter] {metric} {verb} for {subject_ref}: {figures}"
    window = (
        "lifetime (no reset)"
        if alert.period_start is None and alert.period_end is None
        else f"{_iso(alert.period_start)} to {_iso(alert.period_end)} (UTC, end excluded)"
    )
    warn = threshold.warn_threshold
    resolved = event_name == "threshold.resolved"
    rows = [
        ("Metric", metric),
        ("Subject", subject_ref),
        ("Level", one_line(alert.level) + (" (resolved)" if resolved else "")),
        ("Actual", quantity(alert.actual_value)),
        ("Threshold", quantity(alert.threshold_value)
         + (f" (warn at {quantity(warn)})" if warn is not None else "")),
        ("Percentage", percent(alert.percentage)),
        ("Window", window),
        ("Action", threshold.action.value),
        ("Event", f"{one_line(event_name)} at {_iso(occurred_at)}"),
        ("Alert id", one_line(alert.id)),
        ("Threshold id", one_line(alert.threshold_id)),
    ]  # fmt: skip
    width = max(len(label) for label, _ in rows) + 1
    lines = [f"Usage of {metric} by {subject_ref} {verb}.", ""]
    lines += [f"{(label + ':').ljust(width)} {value}" for label, value in rows]
    lines += ["", "-- ", "Sent by tsmeter. Change the threshold's notification targets to stop."]
    return subject, "\n".join(lines) + "\n"


def webhook_body(
    event_name: str,
    delivery_id: str,
    alert: UsageAlert,
    threshold: UsageThreshold,
    occurred_at: datetime,
) -> str:
    """The webhook's JSON body (compact, UTF-8 text; signed and sent byte for byte); the
    threshold's own webhook URL in it is masked (:func:`~tsmeter.domain.targets.mask_url`)."""
    limit = threshold.to_json_dict()
    if limit.get("notifyWebhook"):  # the receiver knows its URL; its secrets stay out of logs
        limit["notifyWebhook"] = mask_url(limit["notifyWebhook"])
    doc: dict[str, Any] = {
        "id": delivery_id,
        "event": event_name,
        "occurredAt": _iso(occurred_at),
        "alert": alert.to_json_dict(),
        "threshold": limit,
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, sort_keys=False)
