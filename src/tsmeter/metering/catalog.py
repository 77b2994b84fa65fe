"""Metric definitions: metric.define/update/delete, metric.get/list, and how a record's metric
is resolved (the org's own definition, else the global one).

Recording resolves a metric per record, so resolutions are cached for ``cache_seconds``; a
change made through this service clears the cache at once, one made by another process is
seen once the entry expires.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from tsmeter.domain import AggregationType, MetricDefinition
from tsmeter.domain.events import EventBus, MetricDefined, MetricDeleted, MetricUpdated
from tsmeter.domain.modelio import build, changed
from tsmeter.domain.models import RECORD_LEVEL
from tsmeter.errors import ConflictError, NotFoundError, ValidationError
from tsmeter.metering.planning import conflict_message, metric_changes
from tsmeter.ports import Catalog, UsageStore

__all__ = ["MetricCatalog", "fixed_field_problems"]


class MetricCatalog:
    """The metric definitions of a catalog, with a cache for resolving records' metrics.
    ``store`` is where ``delete_metric(purge=True)`` removes a metric's records.

    Example::

        metrics = MetricCatalog(catalog, store, EventBus())
        metrics.define_metric("api_calls", aggregation_type="COUNT")
        metrics.resolve("api_calls", "org-1").key  # no definition of org-1's own: the global one
    """

    def __init__(
        self,
        catalog: Catalog,
        store: UsageStore,
        bus: EventBus,
        *,
        cache_seconds: float = 30.0,
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._bus = bus
        self._ttl = cache_seconds
        self._cache: dict[tuple[str, str | None], tuple[float, MetricDefinition]] = {}

    def define_metric(self, key: str, *, exist_ok: bool = False, **fields: Any) -> MetricDefinition:
        """Define a metric; ConflictError if the key exists in that org scope. With
        ``exist_ok`` a definition that exists with the same fields (those not given at their
        defaults) is returned as it is, one that differs is a ConflictError naming the
        fields: safe to repeat at every start-up."""
        now = datetime.now(UTC)
        metric = build(
            MetricDefinition, {**fields, "key": key, "created_at": now, "updated_at": now}
        )
        if exist_ok:
            current = self._catalog.find_metric(metric.key, metric.org_id)
            if current is not None:
                return _same(current, metric)
        try:
            self._catalog.add_metric(metric)
        except ConflictError:
            current = self._catalog.find_metric(metric.key, metric.org_id)
            if not exist_ok or current is None:
                raise
            return _same(current, metric)  # defined meanwhile by another process
        self._cache.clear()  # an org's new definition replaces a cached global fallback
        self._bus.publish(MetricDefined(metric=metric))
        return metric

    def update_metric(
        self, key: str, org_id: str | None = None, **changes: Any
    ) -> MetricDefinition:
        """Change a metric's name, description, unit, aggregation type (among the composable
        types), reset period, rounding, or its dimensions' ``max_values`` and ``values``
        (its id, key, org, creation time and precision are fixed: stored values are integers
        of its precision; so are its dimension names, unique property and time unit, and a
        UNIQUE_COUNT or TIME_WEIGHTED_SUM stays one: see :func:`fixed_field_problems`)."""
        metric = self.get_metric(key, org_id)
        frozen = {"id", "key", "org_id", "orgId", "created_at", "createdAt"} & changes.keys()
        if frozen:
            raise ValidationError(sorted(frozen)[0], "cannot be changed")
        if "precision" in changes and changes["precision"] != metric.precision:
            raise ValidationError(
                "precision", f"cannot be changed (metric {key!r} keeps {metric.precision}"
                " places: its stored values are integers of that precision); define a new"
                " metric for another precision"
            )  # fmt: skip
        data = {**changed(metric, changes), "updated_at": datetime.now(UTC)}
        try:
            updated = build(MetricDefinition, data)
        except ValidationError:
            # asking for UNIQUE_COUNT without a unique property: the type is the problem
            kind = str(data.get("aggregation_type", "")).upper()
            if kind in AggregationType.__members__:
                asked = metric.model_copy(update={"aggregation_type": AggregationType(kind)})
                for field, problem in fixed_field_problems(metric, asked):
                    raise ValidationError(field, problem) from None
            raise
        for field, problem in fixed_field_problems(metric, updated):
            raise ValidationError(field, problem)
        self._catalog.replace_metric(updated)
        self._cache.clear()
        self._bus.publish(MetricUpdated(metric=updated))
        return updated

    def delete_metric(self, key: str, org_id: str | None = None, *, purge: bool = False) -> int:
        """Delete a metric, with ``purge`` its records and summaries too; return the number
        of records purged."""
        metric = self.get_metric(key, org_id)
        purged = self._store.purge_metric(key, metric.org_id) if purge else 0
        self._catalog.remove_metric(metric.id)
        self._cache.clear()
        self._bus.publish(MetricDeleted(metric=metric, purged_records=purged))
        return purged

    def get_metric(self, key: str, org_id: str | None = None) -> MetricDefinition:
        """The metric ``key`` in exactly ``org_id``'s scope (None: global); NotFoundError if
        none."""
        metric = self._catalog.find_metric(key, org_id)
        if metric is None:
            scope = f" in org {org_id!r}" if org_id else ""
            raise NotFoundError(f"metric {key!r} not found{scope}")
        return metric

    def list_metrics(
        self, org_id: str | None = None, *, all_orgs: bool = False
    ) -> list[MetricDefinition]:
        """Metrics of one scope (global by default), or of every scope with ``all_orgs``."""
        metrics = self._catalog.list_metrics()
        return metrics if all_orgs else [m for m in metrics if m.org_id == org_id]

    def resolve(self, key: str, org_id: str | None) -> MetricDefinition:
        """The metric a record refers to: the org's own definition, else the global one;
        ValidationError (on ``metricKey``) if neither exists."""
        now = time.monotonic()
        hit = self._cache.get((key, org_id))
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        metric = self._catalog.find_metric(key, org_id)
        if metric is None and org_id is not None:
            metric = self._catalog.find_metric(key, None)
        if metric is None:
            where = f" (org {org_id!r} or global)" if org_id else ""
            raise ValidationError("metricKey", f"unknown metric {key!r}{where}")
        self._cache[(key, org_id)] = (now, metric)
        return metric


def _same(current: MetricDefinition, wanted: MetricDefinition) -> MetricDefinition:
    """``current`` if ``wanted`` declares the same metric; ConflictError naming the fields
    that differ otherwise."""
    differing = metric_changes(current, wanted)
    if differing:
        scope = f" in org {current.org_id!r}" if current.org_id else ""
        raise ConflictError(conflict_message(f"metric {current.key!r}{scope}", differing))
    return current


def fixed_field_problems(
    current: MetricDefinition, updated: MetricDefinition
) -> list[tuple[str, str]]:
    """The fields ``updated`` changes that cannot change after a metric is created, each
    with why: its dimension names (records were checked and are grouped by them), unique
    property and time unit (the usage reported so far is of them), and an aggregation type
    to or from UNIQUE_COUNT / TIME_WEIGHTED_SUM (computed from records, not from the
    summaries the other types compose). Fields by their camelCase names.

    >>> a = MetricDefinition(key="gb", aggregation_type="TIME_WEIGHTED_SUM")
    >>> fixed_field_problems(a, MetricDefinition(key="gb", aggregation_type="SUM"))[0][0]
    'aggregationType'
    """
    problems: list[tuple[str, str]] = []
    key = current.key
    new_metric = "; define a new metric for"
    if current.dimension_names != updated.dimension_names:
        problems.append(("dimensions", (
            f"dimension names cannot change (metric {key!r} declares"
            f" {_names(current.dimension_names)}, asked {_names(updated.dimension_names)}):"
            " its records were checked and are grouped by them; a dimension's max_values and"
            f" values can change{new_metric} other dimensions")))  # fmt: skip
    before, after = current.aggregation_type, updated.aggregation_type
    if before != after and (before in RECORD_LEVEL or after in RECORD_LEVEL):
        problems.append(("aggregationType", (
            f"cannot change from {before.value} to {after.value}: UNIQUE_COUNT and"
            " TIME_WEIGHTED_SUM are computed from the records themselves, the other types"
            " from summaries (COUNT, SUM, AVG, MAX, MIN and LAST change among themselves)"
            f"{new_metric} another type")))  # fmt: skip
    elif current.unique_property != updated.unique_property:
        problems.append(("uniqueProperty", (
            f"cannot change from {current.unique_property!r} to {updated.unique_property!r}:"
            f" metric {key!r} counts the distinct values of the first{new_metric} another"
            " property")))  # fmt: skip
    if current.time_unit != updated.time_unit:
        problems.append(("timeUnit", (
            f"cannot change from {current.time_unit.value} to {updated.time_unit.value}:"
            f" metric {key!r} has reported its usage in value x {current.time_unit.value.lower()}s"
            f"{new_metric} another unit")))  # fmt: skip
    return problems


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(names) if names else "none"
