"""Threshold administration: threshold.create/update/delete and threshold.list.

Thresholds live in the catalog; a change drops what the quota view holds in memory, so the
next ``check`` in this process reads the BLOCK thresholds again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tsmeter.domain import MetricDefinition, ThresholdAction, UsageThreshold
from tsmeter.domain.modelio import build, changed
from tsmeter.errors import NotFoundError, ValidationError
from tsmeter.limits.quotas import QuotaView
from tsmeter.ports import Catalog

__all__ = ["Thresholds", "block_refusal"]


def block_refusal(metric: MetricDefinition, action: ThresholdAction | str) -> str | None:
    """Why a threshold with ``action`` cannot be on ``metric``, or None: BLOCK (a quota) is
    refused on UNIQUE_COUNT and TIME_WEIGHTED_SUM metrics, whose usage is not a sum of the
    records' quantities.

    >>> block_refusal(MetricDefinition(key="seats", aggregation_type="TIME_WEIGHTED_SUM"),
    ...               "BLOCK")[:44]
    'BLOCK is not available for TIME_WEIGHTED_SUM'
    """
    if action != ThresholdAction.BLOCK or not metric.record_level:
        return None
    return (
        f"BLOCK is not available for {metric.aggregation_type.value} metric {metric.key!r}:"
        " quota enforcement adds records to the usage it holds one at a time as they are"
        " recorded, and a distinct count or a time-weighted sum is not such a running total;"
        " use ALERT or WARN (evaluated on the metric's usage by the threshold job)"
    )


class Thresholds:
    """Creates, changes and lists thresholds. ``get_metric(key, org_id)`` is the metric a new
    threshold is for (NotFoundError if there is none).

    Example: ``Thresholds(catalog, metrics.get_metric, quotas).list_thresholds("api_calls")``.
    """

    def __init__(
        self,
        catalog: Catalog,
        get_metric: Callable[[str, str | None], MetricDefinition],
        quotas: QuotaView,
    ) -> None:
        self._catalog = catalog
        self._get_metric = get_metric
        self._quotas = quotas

    def create_threshold(self, metric_key: str, subject_type: str, threshold: object,
                         subject_id: str = "*", **fields: Any) -> UsageThreshold:  # fmt: skip
        """Create a limit for one subject (or ``*``: every subject of the type)."""
        org_id = fields.get("org_id", fields.get("orgId"))
        if org_id is not None and not isinstance(org_id, str):  # before it reaches a query
            raise ValidationError("orgId", f"must be a string, got {type(org_id).__name__}")
        metric = self._get_metric(metric_key, org_id)
        now = datetime.now(UTC)
        item = build(UsageThreshold, {
            **fields, "metric_key": metric.key, "subject_type": subject_type,
            "subject_id": subject_id, "threshold": threshold, "created_at": now, "updated_at": now,
        })  # fmt: skip
        refused = block_refusal(metric, item.action)
        if refused is not None:
            raise ValidationError("action", refused)
        self._catalog.add_threshold(item)
        self._quotas.invalidate()
        return item

    def get_threshold(self, threshold_id: str) -> UsageThreshold:
        """The threshold with this id; NotFoundError if none."""
        item = self._catalog.get_threshold(threshold_id)
        if item is None:
            raise NotFoundError(f"threshold {threshold_id!r} not found")
        return item

    def update_threshold(self, threshold_id: str, **changes: Any) -> UsageThreshold:
        """Change a threshold's limit, warn level, action or notification targets; a new
        limit without a new warn level brings the warn level back to its default."""
        current = self.get_threshold(threshold_id)
        frozen = {"id", "metric_key", "metricKey", "created_at", "createdAt"} & changes.keys()
        if frozen:
            raise ValidationError(sorted(frozen)[0], "cannot be changed")
        data = changed(current, changes)
        if "threshold" in changes and not {"warn_threshold", "warnThreshold"} & changes.keys():
            data["warn_threshold"] = None  # keep the default 80 % of the new limit
        updated = build(UsageThreshold, {**data, "updated_at": datetime.now(UTC)})
        if updated.action != current.action:
            refused = block_refusal(self._get_metric(current.metric_key, current.org_id),
                                    updated.action)  # fmt: skip
            if refused is not None:
                raise ValidationError("action", refused)
        self._catalog.replace_threshold(updated)
        self._quotas.invalidate()
        return updated

    def delete_threshold(self, threshold_id: str) -> None:
        """Delete a threshold; NotFoundError if none."""
        if not self._catalog.remove_threshold(threshold_id):
            raise NotFoundError(f"threshold {threshold_id!r} not found")
        self._quotas.invalidate()

    def list_thresholds(self, metric_key: str | None = None, subject_type: str | None = None,
                        subject_id: str | None = None) -> list[UsageThreshold]:  # fmt: skip
        """Thresholds, optionally for one metric / subject type / subject (``*`` ones match
        every subject)."""
        return [
            t for t in self._catalog.list_thresholds()
            if (metric_key is None or t.metric_key == metric_key)
            and (subject_type is None or t.subject_type == subject_type)
            and (subject_id is None or t.subject_id in (subject_id, "*"))
        ]  # fmt: skip
