"""tsmeter: usage metering for SaaS products.

>>> import tsmeter
>>> meter = tsmeter.connect("sqlite:///:memory:")
>>> meter.define_metric("api_calls", aggregation_type="COUNT").key
'api_calls'
>>> meter.close()
"""

from tsmeter.bootstrap import connect
from tsmeter.domain import (
    AggregationResult,
    AggregationType,
    AlertStatus,
    BatchResult,
    Dimension,
    EvaluationResult,
    MeteringEvent,
    MetricDefinition,
    PeriodType,
    ResetPeriod,
    ThresholdAction,
    TimeUnit,
    UsageAlert,
    UsageRecord,
    UsageSummary,
    UsageThreshold,
)
from tsmeter.domain.corrections import Correction, CorrectionKind
from tsmeter.domain.events import (
    Event,
    MetricDefined,
    MetricDeleted,
    MetricUpdated,
    ThresholdApproaching,
    ThresholdEvent,
    ThresholdExceeded,
    ThresholdResolved,
    UsageAggregated,
    UsageBatchRecorded,
    UsageCorrected,
    UsageRecorded,
)
from tsmeter.errors import (
    ConflictError,
    NotFoundError,
    OutboxFullError,
    QuotaExceededError,
    RejectedError,
    StorageUnavailableError,
    TsmeterError,
    ValidationError,
)
from tsmeter.limits.quotas import QuotaDecision
from tsmeter.metering.meter import Meter

__version__ = "0.1.0"

__all__ = [
    "AggregationResult",
    "AggregationType",
    "AlertStatus",
    "BatchResult",
    "ConflictError",
    "Correction",
    "CorrectionKind",
    "Dimension",
    "EvaluationResult",
    "Event",
    "Meter",
    "MeteringEvent",
    "MetricDefined",
    "MetricDefinition",
    "MetricDeleted",
    "MetricUpdated",
    "NotFoundError",
    "OutboxFullError",
    "PeriodType",
    "QuotaDecision",
    "QuotaExceededError",
    "RejectedError",
    "ResetPeriod",
    "StorageUnavailableError",
    "ThresholdAction",
    "ThresholdApproaching",
    "ThresholdEvent",
    "ThresholdExceeded",
    "ThresholdResolved",
    "TimeUnit",
    "TsmeterError",
    "UsageAggregated",
    "UsageAlert",
    "UsageBatchRecorded",
    "UsageCorrected",
    "UsageRecord",
    "UsageRecorded",
    "UsageSummary",
    "UsageThreshold",
    "ValidationError",
    "__version__",
    "connect",
]
