"""The public API is the curated list in ``tsmeter.__all__``: it cannot drift silently."""

from __future__ import annotations

import importlib.metadata
import inspect

import pytest

import tsmeter

EXPECTED = [
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
DOCUMENTED = [name for name in EXPECTED if name != "__version__"]


def test_all_is_the_expected_list() -> None:
    """tsmeter.__all__ is exactly the reviewed list, without duplicates."""
    assert sorted(tsmeter.__all__) == sorted(EXPECTED)
    assert len(set(tsmeter.__all__)) == len(tsmeter.__all__)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_public_name_exists_and_is_documented(name: str) -> None:
    """Every public name exists and carries a docstring of its own."""
    obj = getattr(tsmeter, name)
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), name
    if inspect.isclass(obj):
        assert "__doc__" in vars(obj) and vars(obj)["__doc__"], f"{name} inherits its docstring"
        assert not doc.startswith(f"{name}("), f"{name} has only the generated dataclass signature"


def test_meter_methods_are_documented() -> None:
    """Every public method of Meter has a docstring."""
    missing = [
        name
        for name, member in inspect.getmembers(tsmeter.Meter, inspect.isfunction)
        if not name.startswith("_") and not (member.__doc__ or "").strip()
    ]
    assert missing == []


def test_errors_share_one_root() -> None:
    """Every public error derives from TsmeterError."""
    errors = [
        tsmeter.ConflictError,
        tsmeter.NotFoundError,
        tsmeter.StorageUnavailableError,
        tsmeter.ValidationError,
    ]
    assert all(issubclass(e, tsmeter.TsmeterError) for e in errors)


def test_version_matches_the_distribution() -> None:
    """tsmeter.__version__ is the installed distribution's version."""
    assert tsmeter.__version__ == importlib.metadata.version("tsmeter")
