"""The API's request and response shapes where they are not the domain models themselves.

Request models name the fields a route takes (a subset of a domain model); the OpenAPI
document shows them, and :func:`tsmeter.api.bodies.fields_of` accepts exactly their fields.
The values are validated by the Meter (the same rules, and messages, as in Python).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import Field, field_validator

from tsmeter.domain import (
    AggregationType,
    MetricDefinition,
    PeriodType,
    ResetPeriod,
    ThresholdAction,
    UsageAlert,
    UsageRecord,
    UsageSummary,
    UsageThreshold,
)
from tsmeter.domain.models import Model
from tsmeter.domain.quantities import Rounding

__all__ = [
    "AlertList",
    "BatchAccepted",
    "Deleted",
    "MetricCreate",
    "MetricList",
    "MetricUpdate",
    "Problem",
    "ProblemItem",
    "RecordBatch",
    "RecordIn",
    "RecordList",
    "SummaryList",
    "ThresholdCreate",
    "ThresholdList",
    "ThresholdUpdate",
]


def _upper(value: object) -> object:
    """Enum names in any case, as the domain models take them (``block`` is ``BLOCK``)."""
    return value.upper() if isinstance(value, str) else value


class MetricCreate(Model):
    """A metric to define (``POST /v1/metrics``)."""

    key: str
    name: str = ""
    description: str = ""
    unit: str = ""
    aggregation_type: AggregationType = AggregationType.SUM
    reset_period: ResetPeriod = ResetPeriod.MONTHLY
    precision: int = 6
    rounding: Rounding | None = None
    org_id: str | None = None

    _upper_enums = field_validator("aggregation_type", "reset_period", "rounding", mode="before")(
        classmethod(lambda cls, v: _upper(v))
    )


def _absent() -> Any:
    """A field that may be left out but not sent as null (the schema shows no default)."""
    return Field(default=None, json_schema_extra=_no_default)


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class MetricUpdate(Model):
    """Changes to a metric (``PATCH /v1/metrics/{key}``): the fields sent change."""

    name: str = _absent()
    description: str = _absent()
    unit: str = _absent()
    aggregation_type: AggregationType = _absent()
    reset_period: ResetPeriod = _absent()

    _upper_enums = field_validator("aggregation_type", "reset_period", mode="before")(
        classmethod(lambda cls, v: _upper(v))
    )


class RecordIn(Model):
    """One usage record to store; ``id`` is its idempotency key (generated when absent).
    ``quantity`` is a JSON number or a decimal string, kept exactly."""

    id: str | None = None
    metric_key: str
    subject_type: str
    subject_id: str
    quantity: Decimal | None = None
    timestamp: datetime | None = None
    metadata: dict[str, Any] | None = None
    source: str | None = None
    org_id: str | None = None


class RecordBatch(Model):
    """Records stored all or nothing: one bad record stores none and is named
    (``records[3].quantity``)."""

    records: list[RecordIn]


class BatchAccepted(Model):
    """A batch taken: ``accepted`` records (every one), their ``ids`` in the order sent;
    ``recorded`` newly stored, ``duplicates`` already there, ``queued`` in the outbox for the
    store."""

    accepted: int
    ids: list[str]
    recorded: int
    duplicates: int
    queued: int


class ThresholdCreate(Model):
    """A limit to create (``POST /v1/thresholds``)."""

    metric_key: str
    subject_type: str
    subject_id: str = "*"
    threshold: Decimal
    warn_threshold: Decimal | None = None
    period_type: PeriodType | None = None
    action: ThresholdAction = ThresholdAction.ALERT
    notify_emails: list[str] = Field(default_factory=list)
    notify_webhook: str | None = None
    org_id: str | None = None

    _upper_enums = field_validator("period_type", "action", mode="before")(
        classmethod(lambda cls, v: _upper(v))
    )


class ThresholdUpdate(Model):
    """Changes to a threshold (``PATCH /v1/thresholds/{id}``): the fields sent change; a null
    ``warnThreshold`` is the default share again, a null ``periodType`` the metric's reset
    period, a null ``notifyWebhook`` none."""

    threshold: Decimal = _absent()
    warn_threshold: Decimal | None = None
    period_type: PeriodType | None = None
    action: ThresholdAction = _absent()
    notify_emails: list[str] = _absent()
    notify_webhook: str | None = None

    _upper_enums = field_validator("period_type", "action", mode="before")(
        classmethod(lambda cls, v: _upper(v))
    )


class MetricList(Model):
    metrics: list[MetricDefinition]


class RecordList(Model):
    records: list[UsageRecord]


class SummaryList(Model):
    summaries: list[UsageSummary]


class ThresholdList(Model):
    thresholds: list[UsageThreshold]


class AlertList(Model):
    alerts: list[UsageAlert]


class Deleted(Model):
    """What a delete removed: records purged with a metric (0 without ``purge``)."""

    deleted_records: int


class ProblemItem(Model):
    field: str
    message: str


class Problem(Model):
    """An error (``application/problem+json``); ``errors`` name the fields at fault."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemItem]
