"""The metering domain: models and the rules their fields follow. Imports nothing else of tsmeter
except errors."""

from tsmeter.domain.ids import new_id, new_ids
from tsmeter.domain.models import (
    AggregationResult,
    AggregationType,
    AlertStatus,
    BatchResult,
    Dimension,
    EvaluationResult,
    MeteringEvent,
    MetricDefinition,
    Model,
    PeriodType,
    RecordRow,
    ResetPeriod,
    ThresholdAction,
    UsageAlert,
    UsageRecord,
    UsageSummary,
    UsageThreshold,
)
from tsmeter.domain.properties import TimeUnit
from tsmeter.domain.quantities import Rounding

__all__ = [
    "AggregationResult",
    "AggregationType",
    "AlertStatus",
    "BatchResult",
    "Dimension",
    "EvaluationResult",
    "MeteringEvent",
    "MetricDefinition",
    "Model",
    "PeriodType",
    "RecordRow",
    "ResetPeriod",
    "Rounding",
    "ThresholdAction",
    "TimeUnit",
    "UsageAlert",
    "UsageRecord",
    "UsageSummary",
    "UsageThreshold",
    "new_id",
    "new_ids",
]
