"""Plans: what applying a declared state (:mod:`tsmeter.metering.declared`) would change in the
catalog, step by step and field by field, and applying it.

A plan is computed against the catalog as it is and checked whole before anything changes:
a field that cannot change (a metric's precision, dimension names, unique property, time unit,
an aggregation type to or from a record-level one; a threshold's metric), a threshold whose
metric does not exist, raises :class:`~tsmeter.metering.declared.DeclarationError` naming
every such problem, and nothing is written. Metrics are known by key and org; thresholds by
their id where the file gives one, else by metric, org, subject type, subject id, period and
action. What the store holds and the file does not declare is kept, unless the plan prunes:
then it is deleted (a metric's records stay in the store).

>>> import tsmeter
>>> from tsmeter.metering.declared import DesiredState
>>> desired = DesiredState.from_document({"metrics": [{"key": "api_calls", "unit": "calls"}]})
>>> with tsmeter.connect("sqlite:///:memory:") as meter:
...     first = meter.apply(desired)
...     second = meter.apply(desired)
>>> first.counts()["create"], second.changed
(1, False)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tsmeter.domain import AggregationType, MetricDefinition, UsageThreshold
from tsmeter.errors import ConflictError
from tsmeter.metering.declared import (
    METRIC_KEYS,
    DeclarationError,
    DesiredState,
    threshold_identity,
)
from tsmeter.metering.properties import describe_dimensions

if TYPE_CHECKING:
    from tsmeter.limits.thresholds import Thresholds
    from tsmeter.metering.catalog import MetricCatalog

__all__ = [
    "METRIC_FIELDS",
    "THRESHOLD_FIELDS",
    "Change",
    "Plan",
    "Planner",
    "Step",
    "conflict_message",
    "metric_changes",
    "same_threshold",
    "threshold_changes",
]

Action = Literal["create", "update", "unchanged", "delete"]
Kind = Literal["metric", "threshold"]
ACTIONS: tuple[Action, ...] = ("create", "update", "delete", "unchanged")

#: a metric's fields that a declaration sets, as (attribute, name in a file)
METRIC_FIELDS = tuple(
    (attr, key) for key, attr in METRIC_KEYS.items() if key not in ("key", "org_id")
)
#: a metric field as catalog errors name it -> its name in a file
_FILE_FIELD = {"aggregationType": "aggregation_type", "uniqueProperty": "unique_property",
               "timeUnit": "time_unit"}  # fmt: skip
#: a threshold's fields that a declaration sets, as (attribute, name in a file); targets
#: appear as the channels resolved them
THRESHOLD_FIELDS = (
    ("metric_key", "metric"),
    ("org_id", "org_id"),
    ("subject_type", "subject_type"),
    ("subject_id", "subject_id"),
    ("threshold", "limit"),
    ("warn_threshold", "warn_at"),
    ("period_type", "period"),
    ("action", "action"),
    ("notify_emails", "notify_emails"),
    ("notify_webhook", "notify_webhook"),
)


@dataclass(frozen=True)
class Change:
    """One field of a step: its name in a file, the stored value and the declared one
    (None where there is none: the before of a create, the after of a delete)."""

    field: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Step:
    """What a plan does with one metric or threshold. ``path`` is where the file declares it
    (None for a delete); ``note`` says what a person must know (a deleted metric's records)."""

    action: Action
    kind: Kind
    current: MetricDefinition | UsageThreshold | None
    desired: MetricDefinition | UsageThreshold | None
    changes: tuple[Change, ...] = ()
    path: str | None = None
    note: str = ""

    @property
    def item(self) -> MetricDefinition | UsageThreshold:
        """The declared item, else the stored one."""
        item = self.desired if self.desired is not None else self.current
        assert item is not None
        return item

    @property
    def metric_key(self) -> str:
        """The key of the metric (or of the threshold's metric)."""
        item = self.item
        return item.key if isinstance(item, MetricDefinition) else item.metric_key

    @property
    def org_id(self) -> str | None:
        """The org scope of the metric (or of the threshold's metric)."""
        return self.item.org_id


@dataclass(frozen=True)
class Plan:
    """The steps that make the catalog match a declared state, in the order they apply:
    metrics created or changed, thresholds deleted, created or changed, metrics deleted;
    ``unchanged`` steps too. ``kept`` counts what the store holds beyond the declaration and
    keeps (no pruning) as (metrics, thresholds)."""

    source: str
    steps: tuple[Step, ...]
    prune: bool = False
    kept: tuple[int, int] = (0, 0)

    @property
    def changed(self) -> bool:
        """Whether applying the plan changes anything."""
        return any(step.action != "unchanged" for step in self.steps)

    @property
    def pending(self) -> list[Step]:
        """The steps that change something."""
        return [step for step in self.steps if step.action != "unchanged"]

    def counts(self) -> dict[str, int]:
        """How many steps of each action, e.g. ``{"create": 2, "update": 0, ...}``."""
        return {action: sum(s.action == action for s in self.steps) for action in ACTIONS}

    def summary(self) -> str:
        """One sentence: ``2 to create, 1 to update, 0 to delete, 3 unchanged``."""
        n = self.counts()
        text = (f"{n['create']} to create, {n['update']} to update, {n['delete']} to delete, "
                f"{n['unchanged']} unchanged")  # fmt: skip
        metrics, thresholds = self.kept
        if metrics or thresholds:
            kept = " and ".join(_count(n, what) for n, what in
                                ((metrics, "metric"), (thresholds, "threshold")) if n)  # fmt: skip
            text += f"; kept, not in {self.source}: {kept} (--prune deletes them)"
        return text


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def _differences(
    current: Any, desired: Any, fields: Sequence[tuple[str, str]]
) -> tuple[Change, ...]:
    """The fields whose values differ; decimals compare digit for digit (``100`` and
    ``100.00`` differ, as they print differently)."""
    found = []
    for attr, name in fields:
        before, after = getattr(current, attr), getattr(desired, attr)
        if type(before) is not type(after) or before != after or str(before) != str(after):
            found.append(Change(name, _shown(attr, before), _shown(attr, after)))
    return tuple(found)


def _shown(attr: str, value: Any) -> Any:
    """A field's value as a plan shows it (a metric's dimensions as one line of text)."""
    return describe_dimensions(value) if attr == "dimensions" else value


def _worth_showing(item: Any, attr: str, value: Any) -> bool:
    """Whether a created item's field is shown: it holds something (a time unit only where
    it means something: a time-weighted sum's, or one that is not the default)."""
    if value in (None, "", [], ()):
        return False
    if attr == "time_unit" and isinstance(item, MetricDefinition):
        return item.aggregation_type is AggregationType.TIME_WEIGHTED_SUM or value != "HOUR"
    return True


def _fields(item: Any, fields: Sequence[tuple[str, str]]) -> tuple[Change, ...]:
    """A created item's fields that hold something (the after of each)."""
    return tuple(
        Change(name, None, _shown(attr, value))
        for attr, name in fields
        if _worth_showing(item, attr, value := getattr(item, attr))
    )


def metric_changes(current: MetricDefinition, desired: MetricDefinition) -> tuple[Change, ...]:
    """How ``desired`` differs from the stored ``current`` (same key and org).

    >>> a = MetricDefinition(key="gb", unit="GB")
    >>> [c.field for c in metric_changes(a, MetricDefinition(key="gb", unit="GiB", precision=2))]
    ['unit', 'precision']
    """
    return _differences(current, desired, METRIC_FIELDS)


def threshold_changes(current: UsageThreshold, desired: UsageThreshold) -> tuple[Change, ...]:
    """How ``desired`` differs from the stored ``current``."""
    return _differences(current, desired, THRESHOLD_FIELDS)


def same_threshold(
    stored: Iterable[UsageThreshold], desired: UsageThreshold
) -> UsageThreshold | None:
    """The first stored threshold with the identity of ``desired`` (metric, org, subject
    type and id, period, action), or None; ConflictError naming the fields if its fields
    differ. What ``create_threshold(..., exist_ok=True)`` returns instead of a second one."""
    identity = threshold_identity(desired)
    for item in stored:
        if threshold_identity(item) == identity:
            differing = threshold_changes(item, desired)
            if differing:
                raise ConflictError(conflict_message(f"threshold {item.id!r}", differing))
            return item
    return None


def conflict_message(what: str, changes: Sequence[Change]) -> str:
    """``what`` exists with different fields: each named, with its stored and asked value."""
    shown = ", ".join(f"{c.field} {_text(c.before)} (asked: {_text(c.after)})" for c in changes)
    return f"{what} exists with different fields: {shown}"


def _text(value: object) -> str:
    return repr(str(value)) if value is not None else "none"


class Planner:
    """Computes plans against a catalog and applies them. ``has_records(key, org_id)`` says
    whether a metric has recorded usage (a plan that deletes it says so).

    Example: ``Planner(metrics, thresholds, has_records).plan(desired, prune=True)``.
    """

    def __init__(
        self,
        metrics: MetricCatalog,
        thresholds: Thresholds,
        has_records: Callable[[str, str | None], bool],
    ) -> None:
        self._metrics = metrics
        self._thresholds = thresholds
        self._has_records = has_records

    def plan(self, desired: DesiredState, *, prune: bool = False) -> Plan:
        """The plan that makes the catalog match ``desired``; DeclarationError naming every
        problem if it cannot be applied whole."""
        from tsmeter.limits.thresholds import block_refusal
        from tsmeter.metering.catalog import fixed_field_problems  # it imports this module

        problems: list[tuple[str, str]] = []
        stored_metrics = self._metrics.list_metrics(all_orgs=True)
        by_identity = {(m.key, m.org_id): m for m in stored_metrics}
        metric_steps: list[Step] = []
        declared: set[tuple[str, str | None]] = set()
        declared_by = {(d.definition.key, d.definition.org_id): d.definition
                       for d in desired.metrics}  # fmt: skip
        for declared_metric in desired.metrics:
            metric = declared_metric.definition
            identity = (metric.key, metric.org_id)
            declared.add(identity)
            current = by_identity.get(identity)
            if current is None:
                fields = _fields(metric, METRIC_FIELDS)
                metric_steps.append(
                    Step("create", "metric", None, metric, fields, declared_metric.path)
                )
                continue
            changes = metric_changes(current, metric)
            if any(c.field == "precision" for c in changes):
                problems.append((f"{declared_metric.path}.precision", (
                    f"cannot change from {current.precision} to {metric.precision}: metric "
                    f"{metric.key!r} stores its values as integers of its places; declare a "
                    "new metric for another precision")))  # fmt: skip

            for field, problem in fixed_field_problems(current, metric):
                place = _FILE_FIELD.get(field, field)
                problems.append((f"{declared_metric.path}.{place}", problem))
            action: Action = "update" if changes else "unchanged"
            metric_steps.append(
                Step(action, "metric", current, metric, changes, declared_metric.path)
            )
        gone = [m for m in stored_metrics if (m.key, m.org_id) not in declared]
        known = declared | ({(m.key, m.org_id) for m in gone} if not prune else set())

        stored_thresholds = self._thresholds.list_thresholds()
        by_id = {t.id: t for t in stored_thresholds}
        claimed: set[str] = set()
        matched: dict[int, UsageThreshold] = {}
        entries = list(enumerate(desired.thresholds))
        for i, entry in entries:  # those with an id first: they are matched by it alone
            if entry.explicit_id and entry.threshold.id in by_id:
                matched[i] = by_id[entry.threshold.id]
                claimed.add(entry.threshold.id)
        for i, entry in entries:
            if entry.explicit_id:
                continue
            same = threshold_identity(entry.threshold)
            for item in stored_thresholds:
                if item.id not in claimed and threshold_identity(item) == same:
                    matched[i] = item
                    claimed.add(item.id)
                    break
        threshold_steps: list[Step] = []
        for i, entry in entries:
            wanted = entry.threshold
            if (wanted.metric_key, wanted.org_id) not in known:
                scope = f" in org {wanted.org_id!r}" if wanted.org_id is not None else ""
                why = " (pruned: not in the file)" if prune and any(
                    (m.key, m.org_id) == (wanted.metric_key, wanted.org_id) for m in gone
                ) else ""  # fmt: skip
                problems.append((f"{entry.path}.metric", (
                    f"no metric {wanted.metric_key!r}{scope}{why}: declare it under metrics"
                    " (a threshold's org_id is the scope of its metric)")))  # fmt: skip
            metric_of = declared_by.get((wanted.metric_key, wanted.org_id)) or by_identity.get(
                (wanted.metric_key, wanted.org_id))  # fmt: skip
            refused = None if metric_of is None else block_refusal(metric_of, wanted.action)
            if refused is not None:
                problems.append((f"{entry.path}.action", refused))
            current_t = matched.get(i)
            if current_t is None:
                fields = _fields(wanted, THRESHOLD_FIELDS)
                threshold_steps.append(
                    Step("create", "threshold", None, wanted, fields, entry.path)
                )
                continue
            wanted = wanted.model_copy(update={"id": current_t.id})
            changes = threshold_changes(current_t, wanted)
            if any(c.field == "metric" for c in changes):
                problems.append((f"{entry.path}.metric", (
                    f"threshold {current_t.id!r} is for metric {current_t.metric_key!r}; its "
                    "metric cannot change: give it another id")))  # fmt: skip
            action = "update" if changes else "unchanged"
            threshold_steps.append(
                Step(action, "threshold", current_t, wanted, changes, entry.path)
            )
        if problems:
            raise DeclarationError(desired.source, problems)

        leftover = [t for t in stored_thresholds if t.id not in claimed]
        deletes_t: list[Step] = []
        deletes_m: list[Step] = []
        if prune:
            deletes_t = [
                Step("delete", "threshold", t, None, _gone(t, THRESHOLD_FIELDS)) for t in leftover
            ]
            for metric in gone:
                note = ""
                if self._has_records(metric.key, metric.org_id):
                    note = ("has recorded usage: its records stay in the store (not purged); "
                            "defining the metric again brings them back")  # fmt: skip
                deletes_m.append(
                    Step("delete", "metric", metric, None, _gone(metric, METRIC_FIELDS), note=note)
                )
        creates_t = [s for s in threshold_steps if s.action != "unchanged"]
        same_t = [s for s in threshold_steps if s.action == "unchanged"]
        steps = (*metric_steps, *deletes_t, *creates_t, *same_t, *deletes_m)
        kept = (0, 0) if prune else (len(gone), len(leftover))
        return Plan(desired.source, steps, prune, kept)

    def apply(self, plan: Plan, on_step: Callable[[Step], object] | None = None) -> int:
        """Make the plan's changes in its order; return how many steps changed something.
        ``on_step`` is called after each such step (progress). A failure part-way (the store
        went away) leaves the steps before it done: applying the file again finishes it."""
        done = 0
        for step in plan.pending:
            self._apply(step)
            done += 1
            if on_step is not None:
                on_step(step)
        return done

    def _apply(self, step: Step) -> None:
        if step.kind == "metric":
            metric = step.item
            assert isinstance(metric, MetricDefinition)
            if step.action == "create":
                self._metrics.define_metric(metric.key, **_metric_fields(metric))
            elif step.action == "update":
                fields = _metric_fields(metric)
                del fields["precision"], fields["org_id"]
                self._metrics.update_metric(metric.key, metric.org_id, **fields)
            else:
                self._metrics.delete_metric(metric.key, metric.org_id)
            return
        item = step.item
        assert isinstance(item, UsageThreshold)
        if step.action == "delete":
            self._thresholds.delete_threshold(item.id)
            return
        fields = {attr: getattr(item, attr) for attr, _ in THRESHOLD_FIELDS}
        if step.action == "create":
            key, subject_type, limit = item.metric_key, item.subject_type, item.threshold
            for name in ("metric_key", "subject_type", "threshold", "subject_id"):
                del fields[name]
            self._thresholds.create_threshold(key, subject_type, limit, item.subject_id,
                                              id=item.id, **fields)  # fmt: skip
        else:
            del fields["metric_key"]
            self._thresholds.update_threshold(item.id, **fields)


def _metric_fields(metric: MetricDefinition) -> dict[str, Any]:
    fields = {attr: getattr(metric, attr) for attr, _ in METRIC_FIELDS}
    fields["org_id"] = metric.org_id
    return fields


def _gone(item: Any, fields: Sequence[tuple[str, str]]) -> tuple[Change, ...]:
    """A deleted item's fields that held something (the before of each)."""
    return tuple(Change(c.field, c.after, None) for c in _fields(item, fields))
