"""Domain models: metric definitions, usage records, summaries, thresholds and alerts.

Python attributes are snake_case; JSON uses the camelCase names of the
contracts this package follows, and accepts either on input::

    >>> MetricDefinition.model_validate({"key": "api_calls", "aggregationType": "count"}).key
    'api_calls'
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, localcontext
from enum import StrEnum
from functools import cache
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from tsmeter.domain.ids import new_id
from tsmeter.domain.properties import (
    MAX_DIMENSION_VALUES,
    MAX_DIMENSIONS,
    TimeUnit,
    check_property_name,
    property_value,
)
from tsmeter.domain.quantities import (
    DEFAULT_PRECISION,
    MAX_PRECISION,
    MAX_UNITS,
    Rounding,
    from_units,
    parse_decimal,
    to_units,
)
from tsmeter.domain.targets import check_emails, check_webhook_url
from tsmeter.domain.validation import (
    check_metadata,
    check_name,
    from_ns,
    load_metadata,
    parse_timestamp,
    to_ns,
)


class AggregationType(StrEnum):
    """How a metric's records combine into one number per period."""

    COUNT = "COUNT"
    SUM = "SUM"
    AVG = "AVG"
    MAX = "MAX"
    MIN = "MIN"
    LAST = "LAST"
    #: the number of distinct values of the metric's ``unique_property`` (active users)
    UNIQUE_COUNT = "UNIQUE_COUNT"
    #: each reading held until the next, integrated over the period, in value × the
    #: metric's ``time_unit`` (GB-hours, seat-days)
    TIME_WEIGHTED_SUM = "TIME_WEIGHTED_SUM"


#: aggregation types whose value is not made of a summary's components: they are computed
#: from the records of each period (see :mod:`tsmeter.metering.measures`)
RECORD_LEVEL = frozenset({AggregationType.UNIQUE_COUNT, AggregationType.TIME_WEIGHTED_SUM})


class PeriodType(StrEnum):
    """Calendar periods summaries are computed for."""

    HOURLY = "HOURLY"
    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"
    YEARLY = "YEARLY"


class ResetPeriod(StrEnum):
    """When a metric's running usage starts again from zero (``NEVER``: lifetime)."""

    NEVER = "NEVER"
    HOURLY = "HOURLY"
    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"
    YEARLY = "YEARLY"


class ThresholdAction(StrEnum):
    """What happens when usage crosses a threshold."""

    NONE = "NONE"
    ALERT = "ALERT"
    WARN = "WARN"
    BLOCK = "BLOCK"
    DOWNGRADE = "DOWNGRADE"


class AlertStatus(StrEnum):
    """Lifecycle of a usage alert."""

    PENDING = "PENDING"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    RESOLVED = "RESOLVED"


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class Model(BaseModel):
    """Base of every model: camelCase JSON, snake_case attributes, no unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
    )

    def to_json_dict(self) -> dict[str, Any]:
        """The model as a JSON-ready dict with camelCase keys."""
        return self.model_dump(mode="json")

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        """A field given as both ``subjectId`` and ``subject_id``: the same value is taken
        once, different values are refused (never one of them kept silently)."""
        if not isinstance(data, dict):
            return data
        for name, camel in _spellings(cls):
            if camel in data and name in data:
                first, second = data[camel], data[name]
                if type(first) is not type(second) or first != second:
                    raise ValueError(
                        f"{camel}: disagrees with {name}; give one spelling, or the same value"
                        " in both"
                    )
                data = {key: value for key, value in data.items() if key != name}
        return data


@cache
def _spellings(cls: type[Model]) -> tuple[tuple[str, str], ...]:
    """The fields of ``cls`` whose camelCase name differs, with it (worked out once per class,
    not for every model built)."""
    return tuple((name, to_camel(name)) for name in cls.model_fields if to_camel(name) != name)


class Dimension(Model):
    """A record property a metric's usage can be grouped and filtered by (``model``,
    ``region``): the key ``name`` of a record's metadata. ``values`` closes the set of values
    it may take; else at most ``max_values`` distinct values are accepted, fleet-wide, and a
    record bringing one more is refused (on InfluxDB each value is a tag value)."""

    name: str
    max_values: int = Field(default=100, ge=1, le=MAX_DIMENSION_VALUES, strict=True)
    values: tuple[str, ...] | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> str:
        return check_property_name("name", value)

    @field_validator("values", mode="before")
    @classmethod
    def _values(cls, value: object) -> object:
        if value is None:
            return None
        if not isinstance(value, list | tuple) or not value:
            raise ValueError("must be a non-empty list of values")
        if len(value) > MAX_DIMENSION_VALUES:
            raise ValueError(f"must hold at most {MAX_DIMENSION_VALUES} values")
        kept = tuple(property_value(f"values[{i}]", v) for i, v in enumerate(value))
        if len(set(kept)) != len(kept):
            raise ValueError("must not repeat a value")
        return kept

    def admits(self, value: str) -> bool:
        """Whether a closed dimension takes ``value`` (an open one takes any)."""
        return self.values is None or value in self.values


class MetricDefinition(Model):
    """A trackable metric, e.g. ``api_calls`` counted per organisation per month."""

    id: str = Field(default_factory=new_id)
    key: str
    name: str = ""
    description: str = ""
    unit: str = ""
    aggregation_type: AggregationType = AggregationType.SUM
    reset_period: ResetPeriod = ResetPeriod.MONTHLY
    #: decimal places of its quantities (0 to 12): values are stored as integers of
    #: ``10 ** -precision`` (see :mod:`tsmeter.domain.quantities`)
    precision: int = Field(default=DEFAULT_PRECISION, ge=0, le=MAX_PRECISION, strict=True)
    #: how a value with more places is rounded; None: such a value is refused
    rounding: Rounding | None = None
    #: the record properties usage can be grouped and filtered by (see :class:`Dimension`)
    dimensions: tuple[Dimension, ...] = ()
    #: UNIQUE_COUNT: the record property whose distinct values are counted
    unique_property: str | None = None
    #: TIME_WEIGHTED_SUM: the time unit of the reported value (HOUR: value × hours)
    time_unit: TimeUnit = TimeUnit.HOUR
    org_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    _upper_enums = field_validator(
        "aggregation_type", "reset_period", "rounding", "time_unit", mode="before"
    )(classmethod(lambda cls, v: _upper(v)))

    @field_validator("unique_property", mode="before")
    @classmethod
    def _unique_property(cls, value: object) -> str | None:
        return None if value is None else check_property_name("uniqueProperty", value)

    @field_validator("dimensions", mode="before")
    @classmethod
    def _dimensions(cls, value: object) -> object:
        if value is None:
            return ()
        if isinstance(value, list | tuple) and len(value) > MAX_DIMENSIONS:
            raise ValueError(f"at most {MAX_DIMENSIONS} dimensions")
        return value

    @model_validator(mode="after")
    def _properties(self) -> MetricDefinition:
        names = [d.name for d in self.dimensions]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"dimensions[{i}].name: {name!r} is declared twice")
        unique = self.aggregation_type is AggregationType.UNIQUE_COUNT
        if unique and self.unique_property is None:
            raise ValueError(
                "uniqueProperty: required for a UNIQUE_COUNT metric (the record property"
                " whose distinct values are counted, e.g. user_id)"
            )
        if not unique and self.unique_property is not None:
            raise ValueError(
                f"uniqueProperty: only a UNIQUE_COUNT metric counts distinct values"
                f" (this one is {self.aggregation_type.value})"
            )
        return self

    @property
    def dimension_names(self) -> tuple[str, ...]:
        """The names of its dimensions, in declared order."""
        return tuple(d.name for d in self.dimensions)

    @property
    def record_level(self) -> bool:
        """Whether its value is computed from records, not summary components."""
        return self.aggregation_type in RECORD_LEVEL

    def units(self, field: str, value: object) -> int:
        """``value`` in this metric's units (its precision and rounding applied)."""
        return to_units(field, value, self.precision, self.rounding)

    def decimal(self, units: int) -> Decimal:
        """The quantity of ``units`` of this metric, with ``precision`` places."""
        return from_units(units, self.precision)

    def usage(self, value: int) -> Decimal:
        """A value of :func:`~tsmeter.domain.quantities.aggregate_units` as users see it:
        for a COUNT metric the number of records (UNIQUE_COUNT: of distinct values), else
        :meth:`decimal` of the units."""
        if self.aggregation_type in (AggregationType.COUNT, AggregationType.UNIQUE_COUNT):
            return Decimal(value)
        return self.decimal(value)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_name("key", value)

    @field_validator("org_id")
    @classmethod
    def _org(cls, value: str | None) -> str | None:
        return None if value is None else check_name("orgId", value)

    @field_validator("name", "description", "unit")
    @classmethod
    def _text(cls, value: str) -> str:
        if len(value) > 4096:
            raise ValueError("must be at most 4096 characters")
        return value


class RecordRow(NamedTuple):
    """A validated usage record in the compact form stores write: time in ns since the
    epoch, ``quantity`` in units of the metric (its value times ``10 ** precision``)."""

    id: str
    metric_key: str
    subject_type: str
    subject_id: str
    org_id: str | None
    quantity: int
    ts: int
    metadata: str | None
    source: str | None


class UsageRecord(Model):
    """One usage event: ``org-123`` used ``1`` of ``api_calls`` at a time.

    ``id`` is the idempotency key: recording the same id twice counts once.
    """

    id: str = Field(default_factory=new_id)
    metric_key: str
    subject_type: str
    subject_id: str
    quantity: Decimal = Decimal(1)
    timestamp: datetime
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None
    org_id: str | None = None

    @field_validator("id", "metric_key", "subject_type", "subject_id", mode="before")
    @classmethod
    def _names(cls, value: object, info: Any) -> str:
        return check_name(to_camel(info.field_name), value)

    @field_validator("org_id", "source", mode="before")
    @classmethod
    def _optional_names(cls, value: object, info: Any) -> str | None:
        return None if value is None else check_name(to_camel(info.field_name), value)

    @field_validator("quantity", mode="before")
    @classmethod
    def _quantity(cls, value: object) -> Decimal:
        return parse_decimal("quantity", value)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: object) -> datetime:
        return parse_timestamp("timestamp", value)

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: object) -> object:
        check_metadata("metadata", value)
        return {} if value is None else value

    def to_row(
        self, precision: int = DEFAULT_PRECISION, rounding: Rounding | None = None
    ) -> RecordRow:
        """The compact row a store writes, the quantity in units of ``precision``."""
        return RecordRow(
            self.id,
            self.metric_key,
            self.subject_type,
            self.subject_id,
            self.org_id,
            to_units("quantity", self.quantity, precision, rounding),
            to_ns(self.timestamp),
            check_metadata("metadata", self.metadata),
            self.source,
        )

    @classmethod
    def from_row(cls, row: RecordRow, precision: int = DEFAULT_PRECISION) -> UsageRecord:
        """Rebuild a record from a stored row of a metric of ``precision`` (no
        re-validation)."""
        return cls.model_construct(
            id=row.id,
            metric_key=row.metric_key,
            subject_type=row.subject_type,
            subject_id=row.subject_id,
            org_id=row.org_id,
            quantity=from_units(row.quantity, precision),
            timestamp=from_ns(row.ts),
            metadata=load_metadata(row.metadata),
            source=row.source,
        )


class UsageSummary(Model):
    """Usage of one metric by one subject over one calendar period ``[periodStart, periodEnd)``.

    ``total_quantity`` is the value under the metric's aggregation type; the
    components (``sum``, ``count`` via ``record_count``, ``min``, ``max``,
    ``last_value`` at ``last_timestamp``) let summaries roll up exactly. Quantities are
    exact decimals with the metric's precision (AVG: the sum over the count, rounded half
    to even to that precision); JSON carries them as decimal strings.
    """

    metric_key: str
    subject_type: str
    subject_id: str
    org_id: str | None = None
    period_type: PeriodType
    period_start: datetime
    period_end: datetime
    timezone: str = "UTC"
    aggregation_type: AggregationType
    total_quantity: Decimal
    record_count: int
    sum: Decimal
    min: Decimal | None
    max: Decimal | None
    last_value: Decimal | None
    last_timestamp: datetime | None
    #: a grouped summary's dimension values (None: the record had no value), by name;
    #: None when usage was not grouped
    dimensions: dict[str, str | None] | None = None


#: Validation context for models read back from the state store: ``model_validate_json(doc,
#: context=STORED)``.
STORED = {"stored": True}


def _stored(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and info.context.get("stored") is True


class UsageThreshold(Model):
    """A limit on a metric for one subject (or every subject of a type with ``*``)."""

    id: str = Field(default_factory=new_id)
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
    created_at: datetime | None = None
    updated_at: datetime | None = None

    _upper_enums = field_validator("period_type", "action", mode="before")(
        classmethod(lambda cls, v: _upper(v))
    )

    @field_validator("metric_key", "subject_type", "subject_id", mode="before")
    @classmethod
    def _names(cls, value: object, info: Any) -> str:
        return check_name(to_camel(info.field_name), value)

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold(cls, value: object) -> Decimal:
        number = parse_decimal("threshold", value)
        if number <= 0:
            raise ValueError("must be greater than zero")
        if number > MAX_UNITS:  # beyond any total a metric can hold, at any precision
            raise ValueError(f"must be at most {MAX_UNITS} (no usage total can reach more)")
        return number

    @field_validator("warn_threshold", mode="before")
    @classmethod
    def _warn(cls, value: object) -> Decimal | None:
        return None if value is None else parse_decimal("warnThreshold", value)

    # Targets are checked on input (see tsmeter.domain.targets). A threshold read back from
    # the state store (context STORED) loads as written, so one target that an older version
    # accepted cannot break every threshold; the delivery refuses it on its own.
    @field_validator("notify_emails")
    @classmethod
    def _emails(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return value if _stored(info) else check_emails(value)

    @field_validator("notify_webhook")
    @classmethod
    def _webhook(cls, value: str | None, info: ValidationInfo) -> str | None:
        return value if value is None or _stored(info) else check_webhook_url(value)

    @model_validator(mode="after")
    def _warn_default(self) -> UsageThreshold:
        if self.warn_threshold is None:
            object.__setattr__(self, "warn_threshold", _share(self.threshold))
        elif not 0 < self.warn_threshold <= self.threshold:
            raise ValueError("warnThreshold: must be greater than 0 and at most threshold")
        return self


_WARN_SHARE = Decimal("0.8")  # the default warn level: 80 % of the threshold


def _share(threshold: Decimal) -> Decimal:
    """80 % of ``threshold``, exactly, with no more places than that needs (``100`` gives
    ``80``, not ``80.0``).

    >>> _share(Decimal("100")), _share(Decimal("0.5")), _share(Decimal("12.34"))
    (Decimal('80'), Decimal('0.4'), Decimal('9.872'))
    """
    with localcontext(prec=80):
        warn = threshold * _WARN_SHARE
        exponent = threshold.as_tuple().exponent
        places = min(0, exponent) if isinstance(exponent, int) else 0
        trimmed = warn.quantize(Decimal(1).scaleb(places))
        return trimmed if trimmed == warn else warn.normalize()


class UsageAlert(Model):
    """A threshold crossing for one subject in one period window."""

    id: str = Field(default_factory=new_id)
    threshold_id: str
    metric_key: str
    subject_type: str
    subject_id: str
    level: str  # "approaching" or "exceeded"
    period_start: datetime | None
    period_end: datetime | None
    actual_value: Decimal
    threshold_value: Decimal
    percentage: float
    status: AlertStatus = AlertStatus.PENDING
    created_at: datetime | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None


class BatchResult(Model):
    """What ``record_batch`` did: records newly stored and ids that were already there; with
    an outbox, records ``queued`` for the store instead (duplicates are dropped on delivery)."""

    recorded: int
    duplicates: int
    queued: int = 0


class AggregationResult(Model):
    """What one aggregation run did."""

    period_type: PeriodType
    summaries_written: int
    periods_recomputed: int
    records_seen: int
    range_start: datetime | None = None
    range_end: datetime | None = None


class EvaluationResult(Model):
    """What one threshold evaluation did: thresholds and (threshold, subject) pairs looked
    at, alerts opened per level and alerts resolved; ``failed`` counts the series whose usage
    could not be read (``errors`` says which), every other series was evaluated."""

    thresholds: int = 0
    subjects: int = 0
    approaching: int = 0
    exceeded: int = 0
    resolved: int = 0
    failed: int = 0
    errors: list[str] = Field(default_factory=list)


class MeteringEvent(Model):
    """A stored metering event (threshold crossing or resolution, aggregation run)."""

    name: str
    occurred_at: datetime
    metric_key: str
    subject_type: str
    subject_id: str
    org_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
