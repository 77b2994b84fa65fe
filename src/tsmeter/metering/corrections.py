"""Cancelling and amending stored records: the service behind ``Meter.cancel_record``,
``Meter.amend_record`` and ``Meter.list_corrections``.

One call is one :meth:`~tsmeter.ports.UsageStore.correct` of the usage store, which finds
the record, checks the correction window, keeps the audit row, applies the change and marks
the record's periods for recomputation (as a late record does), and refuses to count a
cancelled id again. Around it, this service validates the request, derives the default
correction id (:func:`~tsmeter.domain.corrections.correction_id`), and, when the correction
was applied by this call, stores a ``usage.corrected`` metering event, publishes
:class:`~tsmeter.domain.events.UsageCorrected` and makes the quota view read the record's
series again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

from tsmeter.domain import MetricDefinition, RecordRow
from tsmeter.domain.corrections import (
    Correction,
    CorrectionKind,
    CorrectionRequest,
    CorrectionRow,
    check_actor,
    check_reason,
    correction_id,
)
from tsmeter.domain.events import EventBus, UsageCorrected
from tsmeter.domain.modelio import TimeLike
from tsmeter.domain.quantities import DEFAULT_PRECISION, from_units
from tsmeter.domain.validation import check_name, from_ns, parse_timestamp, to_ns
from tsmeter.errors import TsmeterError, ValidationError
from tsmeter.limits.quotas import QuotaView
from tsmeter.ports import CorrectionQuery, EventRow, UsageStore

__all__ = ["DEFAULT_WINDOW", "EVENT", "Corrections", "window_ns"]

#: how long after its timestamp a record can be corrected, unless the Meter is told otherwise
DEFAULT_WINDOW = timedelta(days=90)
#: the name of the stored metering event and of the domain event
EVENT = "usage.corrected"


def window_ns(window: timedelta | float | int) -> int:
    """A correction window (a timedelta, or seconds) in ns; ValidationError naming
    ``correction_window`` unless it is positive.

    >>> window_ns(timedelta(days=1)) == window_ns(86_400)
    True
    """
    if isinstance(window, timedelta):
        ns = (window // timedelta(microseconds=1)) * 1000
    elif isinstance(window, int | float) and not isinstance(window, bool):
        ns = int(window * 1_000_000_000)
    else:
        raise ValidationError(
            "correction_window", f"must be a timedelta or seconds, got {type(window).__name__}"
        )
    if ns <= 0:
        raise ValidationError("correction_window", f"must be positive, got {window!r}")
    return ns


class Corrections:
    """Cancel and amend stored records (see the module docstring)."""

    def __init__(
        self,
        store: UsageStore,
        metric_of: Callable[[str, str | None], MetricDefinition],
        events: EventBus,
        quotas: QuotaView,
        *,
        window: timedelta | float | int = DEFAULT_WINDOW,
        settle: Callable[[], None] | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._store = store
        self._metric_of = metric_of
        self._events = events
        self._quotas = quotas
        self.window = window_ns(window)
        self._settle = settle or (lambda: None)
        self._clock = clock

    # -- applying -----------------------------------------------------------------------
    def cancel(
        self, record_id: str, *, reason: str, actor: str, correction_id: str | None = None
    ) -> Correction:
        """Cancel a stored record (see ``Meter.cancel_record``)."""
        record_id, reason, actor, cid = _checked(record_id, reason, actor, correction_id)
        cid = cid or _derived(record_id, CorrectionKind.CANCEL)
        return self._apply(CorrectionKind.CANCEL, record_id, cid, 0, actor, reason)

    def amend(
        self,
        record_id: str,
        quantity: int | float | str | Decimal,
        *,
        reason: str,
        actor: str,
        correction_id: str | None = None,
    ) -> Correction:
        """Replace a stored record's quantity (see ``Meter.amend_record``)."""
        record_id, reason, actor, cid = _checked(record_id, reason, actor, correction_id)
        self._settle()
        record = self._store.get_record(record_id)
        if record is None:  # never stored, or cancelled: the store says which
            units = 0
            cid = cid or _derived(record_id, CorrectionKind.AMEND, str(quantity))
        else:
            metric = self._metric_of(record.metric_key, record.org_id)
            units = metric.units("quantity", quantity)
            cid = cid or _derived(record_id, CorrectionKind.AMEND, metric.decimal(units))
        return self._apply(CorrectionKind.AMEND, record_id, cid, units, actor, reason)

    def _apply(
        self, kind: CorrectionKind, record_id: str, cid: str, units: int, actor: str, reason: str
    ) -> Correction:
        self._settle()  # a record still in this process's outbox is stored first
        now = self._clock()
        request = CorrectionRequest(cid, record_id, kind, units, actor, reason, now)
        row, applied = self._store.correct(request, now - self.window)
        correction = self._model(row, applied)
        if applied:
            self._after(row, correction)
        return correction

    def _after(self, row: CorrectionRow, correction: Correction) -> None:
        """What follows an applied correction: the stored event, the domain event, and the
        quota view reading the series again."""
        data = correction.model_dump(mode="json", exclude={"applied"})
        self._store.append_events([EventRow(
            row.corrected_at, EVENT, row.metric_key, row.subject_type, row.subject_id,
            row.org_id, json.dumps(data, separators=(",", ":"), ensure_ascii=False),
        )])  # fmt: skip
        self._quotas.forget([RecordRow(row.record_id, row.metric_key, row.subject_type,
                                       row.subject_id, row.org_id, row.units_before,
                                       row.record_ts, None, None)])  # fmt: skip
        self._events.publish(UsageCorrected(correction=correction))

    # -- reading ------------------------------------------------------------------------
    def list_corrections(
        self,
        metric_key: str | None = None,
        *,
        record_id: str | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        org_id: str | None = None,
    ) -> list[Correction]:
        """The audit trail (see ``Meter.list_corrections``)."""
        query = CorrectionQuery(
            metric_key=None if metric_key is None else check_name("metricKey", metric_key),
            org_id=None if org_id is None else check_name("orgId", org_id),
            record_id=None if record_id is None else check_name("recordId", record_id),
            start=None if start is None else to_ns(parse_timestamp("start", start)),
            end=None if end is None else to_ns(parse_timestamp("end", end)),
        )
        return [self._model(row, True) for row in self._store.list_corrections(query)]

    def _model(self, row: CorrectionRow, applied: bool) -> Correction:
        try:
            precision = self._metric_of(row.metric_key, row.org_id).precision
        except TsmeterError:  # the metric was deleted since: its default precision
            precision = DEFAULT_PRECISION
        return Correction(
            id=row.id,
            record_id=row.record_id,
            kind=row.kind,
            quantity_before=from_units(row.units_before, precision),
            quantity_after=from_units(row.units_after, precision),
            actor=row.actor,
            reason=row.reason,
            corrected_at=from_ns(row.corrected_at),
            metric_key=row.metric_key,
            subject_type=row.subject_type,
            subject_id=row.subject_id,
            org_id=row.org_id,
            record_timestamp=from_ns(row.record_ts),
            applied=applied,
        )


def _checked(
    record_id: object, reason: object, actor: object, cid: object
) -> tuple[str, str, str, str | None]:
    """The request's names, checked (errors name ``recordId``, ``reason``, ``actor``,
    ``correctionId``)."""
    return (
        check_name("recordId", record_id),
        check_reason(reason),
        check_actor(actor),
        None if cid is None else check_name("correctionId", cid),
    )


def _derived(record_id: str, kind: CorrectionKind, quantity: str | Decimal = "") -> str:
    try:
        return correction_id(record_id, kind, quantity)
    except ArithmeticError:  # not a number: the store's answer (not found) comes first
        return correction_id(record_id, kind, "0")
