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
    MetricDefinition,
    PeriodType,
    ResetPeriod,
    ThresholdAction,
    UsageAlert,
    UsageRecord,
    UsageSummary,
    UsageThreshold,
)
from tsmeter.errors import (
    ConflictError,
    NotFoundError,
    StorageUnavailableError,
    TsmeterError,
    ValidationError,
)
from tsmeter.events import (
    Event,
    MetricDefined,
    MetricDeleted,
    MetricUpdated,
    UsageAggregated,
    UsageBatchRecorded,
    UsageRecorded,
)
from tsmeter.service import Meter

__version__ = "0.1.0"

__all__ = [
    "AggregationResult",
    "AggregationType",
    "AlertStatus",
    "BatchResult",
    "ConflictError",
    "Event",
    "Meter",
    "MetricDefined",
    "MetricDefinition",
    "MetricDeleted",
    "MetricUpdated",
    "NotFoundError",
    "PeriodType",
    "ResetPeriod",
    "StorageUnavailableError",
    "ThresholdAction",
    "TsmeterError",
    "UsageAggregated",
    "UsageAlert",
    "UsageBatchRecorded",
    "UsageRecord",
    "UsageRecorded",
    "UsageSummary",
    "UsageThreshold",
    "ValidationError",
    "__version__",
    "connect",
]
