"""Notifications for threshold events: email (SMTP) and signed webhooks, with a durable,
idempotent delivery log and retries with exponential backoff.

::

    from tsmeter.integrations.notify import Notifier, NotifySettings

    notifier = Notifier.for_meter(meter, NotifySettings.from_env())
    ...                                   # threshold events now become deliveries
    notifier.deliveries("failed")         # what could not be delivered, and why
    notifier.close()

A receiver checks a webhook with :func:`verify_signature`.
"""

from tsmeter.integrations.notify.channels import DeliveryError
from tsmeter.integrations.notify.log import Channel, Delivery, DeliveryCounts, DeliveryStatus
from tsmeter.integrations.notify.notifier import Notifier, delivery_id, log_path_of
from tsmeter.integrations.notify.settings import NotifySettings
from tsmeter.integrations.notify.signing import sign, verify_signature

__all__ = [
    "Channel",
    "Delivery",
    "DeliveryCounts",
    "DeliveryError",
    "DeliveryStatus",
    "Notifier",
    "NotifySettings",
    "delivery_id",
    "log_path_of",
    "sign",
    "verify_signature",
]
