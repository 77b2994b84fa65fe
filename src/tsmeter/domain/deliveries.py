"""Notification deliveries as the delivery queue keeps them: channels, statuses, one logged
delivery and one claimed for an attempt.

Shared by the notifier (:mod:`tsmeter.integrations.notify`) and every adapter of the
:class:`~tsmeter.ports.DeliveryQueue` port, so none of them imports another.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from tsmeter.domain.models import Model
from tsmeter.domain.validation import from_ns
from tsmeter.errors import ValidationError

__all__ = [
    "DELIVERY_COLUMNS",
    "Channel",
    "Claimed",
    "Delivery",
    "DeliveryStatus",
    "delivery_from_row",
    "status_filter",
]


class DeliveryStatus(StrEnum):
    """Where a delivery stands: ``pending`` (waiting for its first or next attempt),
    ``delivered``, or ``failed`` (gave up; ``tsmeter notifications retry --failed`` re-queues)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Channel(StrEnum):
    """How a notification travels."""

    EMAIL = "email"
    WEBHOOK = "webhook"


class Delivery(Model):
    """One notification to one target, as recorded in the delivery log.

    Example: ``notifier.deliveries("failed")[0].last_error``.
    """

    id: str
    alert_id: str
    event: str
    channel: Channel
    target: str
    metric_key: str
    subject_type: str
    subject_id: str
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker may attempt now."""

    id: str
    event: str
    channel: Channel
    target: str
    payload: str
    attempts: int


#: the columns :func:`delivery_from_row` reads, in its order
DELIVERY_COLUMNS = (
    "id, alert_id, event, channel, target, metric_key, subject_type, subject_id, status,"
    " attempts, last_error, next_attempt_at, created_at, updated_at, delivered_at"
)


def status_filter(status: DeliveryStatus | str) -> DeliveryStatus:
    """``status`` as a DeliveryStatus (any case); a ValidationError naming ``status``
    otherwise."""
    try:
        return DeliveryStatus(str(status).lower())
    except ValueError:
        raise ValidationError(
            "status", f"must be pending, delivered or failed, got {status!r}"
        ) from None


def delivery_from_row(row: tuple[Any, ...] | Any) -> Delivery:
    """A :class:`Delivery` from a row of :data:`DELIVERY_COLUMNS` (times in ns)."""
    (id_, alert_id, event, channel, target, metric, stype, sid, status, attempts, error,
     next_at, created, updated, delivered) = row  # fmt: skip
    return Delivery(
        id=id_, alert_id=alert_id, event=event, channel=Channel(channel), target=target,
        metric_key=metric, subject_type=stype, subject_id=sid, status=DeliveryStatus(status),
        attempts=attempts, last_error=error,
        next_attempt_at=from_ns(next_at) if status == DeliveryStatus.PENDING else None,
        created_at=from_ns(created), updated_at=from_ns(updated),
        delivered_at=None if delivered is None else from_ns(delivered),
    )  # fmt: skip
