"""Alert commands: list, acknowledge and resolve the alerts the monitor opened.

The monitor (:mod:`tsmeter.limits.monitor`) opens and resolves alerts by itself; these are
what a person does with them. An alert resolved by hand stays resolved for the rest of its
window: the catalog remembers that, so the monitor does not open its level again.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tsmeter.domain import AlertStatus, UsageAlert
from tsmeter.errors import NotFoundError, ValidationError
from tsmeter.ports import Catalog

__all__ = ["Alerts"]


class Alerts:
    """The alerts kept in the catalog, as people read and close them.

    Example: ``Alerts(catalog).list_alerts("PENDING", metric_key="api_calls")``.
    """

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def list_alerts(
        self,
        status: AlertStatus | str | None = None,
        *,
        metric_key: str | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
    ) -> list[UsageAlert]:
        """Alerts, newest first, optionally filtered (see :meth:`tsmeter.Meter.list_alerts`)."""
        wanted = _status(status) if status is not None else None
        return [
            a for a in self._catalog.list_alerts(wanted)
            if (metric_key is None or a.metric_key == metric_key)
            and (subject_type is None or a.subject_type == subject_type)
            and (subject_id is None or a.subject_id == subject_id)
        ]  # fmt: skip

    def acknowledge_alert(self, alert_id: str) -> UsageAlert:
        """Mark an alert as seen (it stays open); ValidationError if it is resolved already."""
        current = self._alert(alert_id)
        if current.status is AlertStatus.RESOLVED:
            raise ValidationError("status", f"alert {alert_id!r} is resolved already")
        updated = self._catalog.set_alert_status(alert_id, AlertStatus.ACKNOWLEDGED,
                                                 datetime.now(UTC))  # fmt: skip
        assert updated is not None
        return updated

    def resolve_alert(self, alert_id: str) -> UsageAlert:
        """Close an alert by hand; one resolved already is returned as it is."""
        current = self._alert(alert_id)
        if current.status is AlertStatus.RESOLVED:
            return current
        updated = self._catalog.set_alert_status(alert_id, AlertStatus.RESOLVED, datetime.now(UTC))
        assert updated is not None
        return updated

    def _alert(self, alert_id: str) -> UsageAlert:
        found = self._catalog.get_alert(alert_id)
        if found is None:
            raise NotFoundError(f"alert {alert_id!r} not found")
        return found


def _status(value: AlertStatus | str) -> AlertStatus:
    try:
        return AlertStatus(value.upper() if isinstance(value, str) else value)
    except ValueError:
        choices = ", ".join(s.value for s in AlertStatus)
        raise ValidationError("status", f"must be one of {choices}, got {value!r}") from None
