"""The API's request and response shapes where they are not the domain models themselves.

Request models name the fields a route takes (a subset of a domain model); the OpenAPI
document shows them, and :func:`tsmeter.api.bodies.fields_of` accepts exactly their fields.
The values are validated by the Meter (the same rules, and messages, as in Python).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, field_validator

from tsmeter.domain import (
    AggregationType,
    Dimension,
    MetricDefinition,
    PeriodType,
    ResetPeriod,
    ThresholdAction,
    UsageAlert,
    UsageRecord,
    UsageSummary,
    UsageThreshold,
)
from tsmeter.domain.corrections import Correction
from tsmeter.domain.models import Model
from tsmeter.domain.properties import MAX_DIMENSIONS, TimeUnit
from tsmeter.domain.quantities import MAX_PRECISION, Rounding
from tsmeter.domain.validation import MAX_NAME_LENGTH

__all__ = [
    "NAME_QUERY",
    "NAME_RULE",
    "TIME_RULE",
    "AlertList",
    "AmendIn",
    "BatchAccepted",
    "CorrectionIn",
    "CorrectionList",
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


#: what :func:`tsmeter.domain.validation.check_name` accepts, stated in the OpenAPI document
#: for clients; the Meter checks it (with its own messages), not the schema
NAME_RULE: dict[str, Any] = {
    "minLength": 1,
    "maxLength": MAX_NAME_LENGTH,
    "pattern": "^[^\u0000-\u001f\u007f-\u009f]*$",
}
#: the same rule, checked, for a query parameter that names something (a filter naming what
#: cannot exist is a mistake to report, not an empty answer)
NAME_QUERY: dict[str, Any] = {
    "min_length": 1,
    "max_length": MAX_NAME_LENGTH,
    "pattern": "^[^\x00-\x1f\x7f-\x9f]*$",
}
#: a time parameter: ISO-8601 with an offset (the Meter reads it)
TIME_RULE: dict[str, Any] = {"format": "date-time"}
Name = Annotated[str, Field(json_schema_extra=NAME_RULE)]
_PRECISION = Field(6, json_schema_extra={"minimum": 0, "maximum": MAX_PRECISION})


def _upper(value: object) -> object:
    """Enum names in any case, as the domain models take them (``block`` is ``BLOCK``)."""
    return value.upper() if isinstance(value, str) else value


class MetricCreate(Model):
    """A metric to define (``POST /v1/metrics``)."""

    key: Name
    name: str = ""
    description: str = ""
    unit: str = ""
    aggregation_type: AggregationType = AggregationType.SUM
    reset_period: ResetPeriod = ResetPeriod.MONTHLY
    precision: int = _PRECISION
    rounding: Rounding | None = None
    dimensions: list[Dimension] = Field(
        default_factory=list,
        max_length=MAX_DIMENSIONS,
        description="record properties (top-level metadata keys) usage is grouped and"
        " filtered by; fixed once the metric exists",
    )
    unique_property: str | None = Field(
        None,
        description="UNIQUE_COUNT (required then, else refused): the record property whose"
        " distinct values are counted; fixed once the metric exists",
    )
    time_unit: TimeUnit = Field(
        TimeUnit.HOUR,
        description="TIME_WEIGHTED_SUM: the unit of time the held value is multiplied by"
        " (HOUR: GB-hours); fixed once the metric exists",
    )
    org_id: Name | None = None

    _upper_enums = field_validator(
        "aggregation_type", "reset_period", "rounding", "time_unit", mode="before"
    )(classmethod(lambda cls, v: _upper(v)))


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
    #: sent to be refused by name if they differ from the stored ones (fixed at creation)
    dimensions: list[Dimension] = _absent()
    unique_property: str = _absent()
    time_unit: TimeUnit = _absent()

    _upper_enums = field_validator("aggregation_type", "reset_period", "time_unit", mode="before")(
        classmethod(lambda cls, v: _upper(v))
    )


class RecordIn(Model):
    """One usage record to store; ``id`` is its idempotency key (generated when absent).
    ``quantity`` is a JSON number or a decimal string, kept exactly."""

    id: Name | None = None
    metric_key: Name
    subject_type: Name
    subject_id: Name
    quantity: Decimal | None = None
    timestamp: datetime | None = None
    metadata: dict[str, Any] | None = None
    source: str | None = None
    org_id: Name | None = None


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

    metric_key: Name
    subject_type: Name
    subject_id: Name = "*"
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


class CorrectionIn(Model):
    """A cancel (``POST /v1/usage/records/{recordId}/cancel``): who and why, kept in the
    audit trail. ``correctionId`` makes a retry a no-op (default: derived from the record
    id and the kind)."""

    reason: str
    actor: str
    correction_id: Name | None = None


class AmendIn(Model):
    """An amend (``POST /v1/usage/records/{recordId}/amend``): the record's new quantity (a
    JSON number or a decimal string, kept exactly), who and why. ``correctionId`` makes a
    retry a no-op (default: derived from the record id and the new quantity)."""

    quantity: Decimal
    reason: str
    actor: str
    correction_id: Name | None = None


class CorrectionList(Model):
    corrections: list[Correction]


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
