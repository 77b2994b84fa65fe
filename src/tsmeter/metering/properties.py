"""Checking the declared properties of records at recording: each dimension's value, a closed
dimension's set of values, an open dimension's bound (``max_values`` distinct values,
fleet-wide), and a UNIQUE_COUNT metric's unique property.

:class:`~tsmeter.metering.intake.Intake` builds rows first, then hands the rows of metrics
that declare dimensions or a unique property here; rows of other metrics are not looked at,
so recording them costs nothing more. An open dimension's values are admitted through the
:class:`~tsmeter.ports.DimensionValues` port (the state store, so every process and host
counts the same values) and remembered in this process: a value seen before costs a set
lookup. Errors name ``records[i].metadata.<name>``; one bad record stores nothing.

Example::

    check = PropertyCheck(store)              # a DimensionValues (the SQLite state file)
    check.rows(items, rows, [tokens_metric])  # raises ValidationError, or admits new values
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from tsmeter.domain import Dimension, MetricDefinition, RecordRow, UsageRecord
from tsmeter.domain.properties import property_value
from tsmeter.errors import ValidationError
from tsmeter.ports import DimensionValues

__all__ = ["LocalDimensionValues", "PropertyCheck", "declares_properties", "describe_dimensions"]


def declares_properties(metric: MetricDefinition) -> bool:
    """Whether recording ``metric`` checks record properties (dimensions or a unique
    property)."""
    return bool(metric.dimensions) or metric.unique_property is not None


def describe_dimensions(dimensions: Sequence[Dimension]) -> str:
    """A metric's dimensions in one line, for plans and ``metric show``: each open one with
    its bound, each closed one with its values.

    >>> describe_dimensions([Dimension(name="model", max_values=50),
    ...                      Dimension(name="region", values=["eu", "us"])])
    'model (max 50), region (eu, us)'
    """
    parts = []
    for dim in dimensions:
        if dim.values is None:
            parts.append(f"{dim.name} (max {dim.max_values})")
        else:
            parts.append(f"{dim.name} ({', '.join(dim.values)})")
    return ", ".join(parts) if parts else "none"


class LocalDimensionValues:
    """:class:`~tsmeter.ports.DimensionValues` kept in this process only: what a Meter uses
    when its state store keeps none (stores built by hand, tests).

    >>> values = LocalDimensionValues()
    >>> values.admit("m1", "region", ["eu", "us"], 2), values.admit("m1", "region", ["ap"], 2)
    (set(), {'ap'})
    """

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()

    def admit(self, metric_id: str, name: str, values: Collection[str], limit: int) -> set[str]:
        """Admit ``values`` if they fit within ``limit`` (see the port)."""
        with self._lock:
            have = self._values.setdefault((metric_id, name), set())
            new = set(values) - have
            if len(have) + len(new) > limit:
                return new
            have |= new
            return set()

    def known(self, metric_id: str, name: str) -> set[str]:
        """The values admitted so far."""
        with self._lock:
            return set(self._values.get((metric_id, name), ()))


class PropertyCheck:
    """Checks the rows of metrics that declare properties; ``values`` keeps the open
    dimensions' values (None: :class:`LocalDimensionValues`)."""

    def __init__(self, values: DimensionValues | None = None) -> None:
        self.values: DimensionValues = values if values is not None else LocalDimensionValues()
        #: (metric id, dimension) -> values known admitted (only ever grows)
        self._admitted: dict[tuple[str, str], set[str]] = {}

    def rows(
        self,
        items: Sequence[Any],
        rows: Sequence[RecordRow],
        metrics: Iterable[MetricDefinition],
        *,
        admit: bool = True,
    ) -> None:
        """Check ``rows`` (built from ``items``, one for one) of the ``metrics`` that declare
        properties; ValidationError naming ``records[i].metadata.<name>`` for the first bad
        record. With ``admit``, an open dimension's new values are admitted (fleet-wide);
        without, they are only checked against the values admitted so far (nothing kept)."""
        checked = {(m.key, m.org_id): m for m in metrics if declares_properties(m)}
        if not checked:
            return
        # per metric: (dimension, closed values or None, admitted cache, values seen good)
        plans: dict[tuple[str, str | None], _Plan] = {
            pair: _Plan(metric, self._admitted) for pair, metric in checked.items()
        }
        for i, row in enumerate(rows):
            plan = plans.get((row[1], row[4]))
            if plan is not None:
                plan.check(i, _metadata(items[i], row))
        bounded = [(plan.metric, dim, pending) for plan in plans.values()
                   for dim, pending in plan.pending()]  # fmt: skip
        if admit and len(bounded) > 1:  # check them all before any takes a value
            for metric, dim, pending in bounded:
                self._bound(metric, dim, pending, admit=False)
        for metric, dim, pending in bounded:
            self._bound(metric, dim, pending, admit)

    def _bound(
        self, metric: MetricDefinition, dim: _Dim, pending: dict[str, int], admit: bool
    ) -> None:
        """Admit (or, without ``admit``, check) the new values of an open dimension;
        ``pending`` maps each to the first record bringing it."""
        key = (metric.id, dim.name)
        if admit:
            refused = self.values.admit(metric.id, dim.name, list(pending), dim.max_values)
            if not refused:
                dim.admitted.update(pending)
                return
            taken = len(self.values.known(metric.id, dim.name))
        else:
            known = self.values.known(metric.id, dim.name)
            self._admitted.setdefault(key, set()).update(known)
            new = set(pending) - known
            if len(known) + len(new) <= dim.max_values:
                return
            refused, taken = new, len(known)
        index = min(pending[value] for value in refused)
        value = next(v for v in refused if pending[v] == index)
        others = len(refused) - 1
        more = f" (and {others} other new value{'s' * (others > 1)})" if others else ""
        raise ValidationError(
            f"records[{index}].metadata.{dim.name}",
            f"{value!r}{more} would pass the bound of dimension {dim.name!r} of metric"
            f" {metric.key!r}: at most {dim.max_values} distinct values (max_values),"
            f" {taken} taken. Each value is a tag value on InfluxDB, so the bound keeps the"
            " series count in check: map the value to a known one, or raise max_values"
            " (tsmeter metric update KEY --dimension NAME:MAX); nothing recorded",
        )


class _Dim:
    """One dimension of a metric, as a batch checks it."""

    __slots__ = ("admitted", "closed", "good", "max_values", "name", "pending")

    def __init__(
        self, name: str, closed: frozenset[str] | None, max_values: int, admitted: set[str]
    ) -> None:
        self.name = name
        self.closed = closed
        self.max_values = max_values
        self.admitted = admitted
        self.good: set[str] = set()  # str values of this call found good (fast path)
        self.pending: dict[str, int] = {}  # new open values -> the first record bringing one


class _Plan:
    """The checks of one metric's records in one call."""

    def __init__(self, metric: MetricDefinition, admitted: dict[tuple[str, str], set[str]]) -> None:
        self.metric = metric
        self.dims = [
            _Dim(
                d.name,
                None if d.values is None else frozenset(d.values),
                d.max_values,
                admitted.setdefault((metric.id, d.name), set()),
            )
            for d in metric.dimensions
        ]
        self.unique = metric.unique_property

    def check(self, index: int, metadata: Mapping[str, Any] | None) -> None:
        """Check record ``index``'s properties (ValidationError for a bad one)."""
        for dim in self.dims:
            value = None if metadata is None else metadata.get(dim.name)
            if value is None or (type(value) is str and value in dim.good):
                continue
            text = property_value(f"records[{index}].metadata.{dim.name}", value)
            if dim.closed is not None:
                if text not in dim.closed:
                    raise ValidationError(
                        f"records[{index}].metadata.{dim.name}",
                        f"{text!r} is not a value of dimension {dim.name!r} of metric"
                        f" {self.metric.key!r}, which takes only {_listed(dim.closed)};"
                        " nothing recorded",
                    )
            elif text not in dim.admitted and text not in dim.pending:
                dim.pending[text] = index
            if type(value) is str:
                dim.good.add(value)
        if self.unique is not None:
            value = None if metadata is None else metadata.get(self.unique)
            field = f"records[{index}].metadata.{self.unique}"
            if value is None:
                raise ValidationError(
                    field,
                    f"is required: metric {self.metric.key!r} counts the distinct values of"
                    f" {self.unique!r} (UNIQUE_COUNT); nothing recorded",
                )
            property_value(field, value)

    def pending(self) -> list[tuple[_Dim, dict[str, int]]]:
        """The open dimensions with values not known admitted, and those values."""
        return [(dim, dim.pending) for dim in self.dims if dim.pending]


def _metadata(item: Any, row: RecordRow) -> Mapping[str, Any] | None:
    """The metadata of the record ``item`` that became ``row`` (as given where it can be
    read without parsing the row's JSON)."""
    if type(item) is dict:
        value = item.get("metadata")
        return value if isinstance(value, Mapping) else None
    if isinstance(item, UsageRecord):
        return item.metadata
    return None if row.metadata is None else json.loads(row.metadata)


def _listed(values: Collection[str]) -> str:
    """A closed set of values for an error message (at most ten shown)."""
    shown = sorted(values)
    text = ", ".join(repr(v) for v in shown[:10])
    return text + (f" and {len(shown) - 10} more" if len(shown) > 10 else "")
