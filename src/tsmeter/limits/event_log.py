"""The metering-event log: threshold crossings written to the store, and read back.

The bus (:class:`tsmeter.domain.events.EventBus`) tells subscribers in this process; the log
keeps the same events in the usage store, so other processes and later runs can list them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from tsmeter.domain import MeteringEvent, MetricDefinition
from tsmeter.domain.events import ThresholdEvent
from tsmeter.domain.modelio import TimeLike, ns
from tsmeter.domain.validation import from_ns, to_ns
from tsmeter.errors import TsmeterError
from tsmeter.ports import EventRow, UsageStore

__all__ = ["EventLog"]

log = logging.getLogger("tsmeter.monitor")


class EventLog:
    """Threshold events of one store's log.

    Example: ``EventLog(store).list_events(name="threshold.exceeded")``.
    """

    def __init__(self, store: UsageStore) -> None:
        self._store = store

    def append(self, events: Sequence[ThresholdEvent], metric: MetricDefinition) -> None:
        """Write the events of one metric to the log. A store that cannot take them is logged,
        not raised: the alerts they describe are in the catalog already."""
        if not events:
            return
        rows = [
            EventRow(to_ns(e.occurred_at), e.name, metric.key, e.alert.subject_type,
                     e.alert.subject_id, metric.org_id, json.dumps(_event_data(e)))
            for e in events
        ]  # fmt: skip
        try:
            self._store.append_events(rows)
        except TsmeterError as exc:
            log.warning("could not store %d threshold events: %s", len(rows), exc)

    def list_events(
        self,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        name: str | None = None,
    ) -> list[MeteringEvent]:
        """Stored events in ``[start, end)``, oldest first; ``name`` keeps one kind or a family
        (see :meth:`tsmeter.Meter.list_events`)."""
        rows = self._store.list_events(ns("start", start), ns("end", end), name)
        return [
            MeteringEvent(name=r.name, occurred_at=from_ns(r.ts), metric_key=r.metric_key,
                          subject_type=r.subject_type, subject_id=r.subject_id,
                          org_id=r.org_id, data=json.loads(r.data))
            for r in rows
        ]  # fmt: skip


def _event_data(event: ThresholdEvent) -> dict[str, Any]:
    alert = event.alert.to_json_dict()
    return {
        "alertId": alert["id"], "thresholdId": alert["thresholdId"], "level": alert["level"],
        "status": alert["status"], "actualValue": alert["actualValue"],
        "thresholdValue": alert["thresholdValue"], "percentage": alert["percentage"],
        "periodStart": alert["periodStart"], "periodEnd": alert["periodEnd"],
        "action": event.threshold.action.value,
    }  # fmt: skip
