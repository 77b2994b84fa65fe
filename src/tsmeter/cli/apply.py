"""``tsmeter apply FILE``: make the store's metrics and thresholds match a YAML or TOML file,
printing the difference first (see :mod:`tsmeter.metering.declared` for the file and
:mod:`tsmeter.metering.planning` for the plan)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.exit_codes import ExitCode
from tsmeter.cli.output import cell_text, emit_list, emit_one, progress, table_lines, visible
from tsmeter.domain import UsageThreshold
from tsmeter.domain.targets import mask_url
from tsmeter.metering.declared import load
from tsmeter.metering.planning import Change, Plan, Step

__all__ = ["apply", "plan_document", "plan_lines"]

_HEADERS = ["ACTION", "KIND", "METRIC", "ORG", "THRESHOLD", "FIELD", "BEFORE", "AFTER"]
#: fields the METRIC, ORG and THRESHOLD columns show already (not repeated for a create)
_NAMED = frozenset({"metric", "org_id", "subject_type", "subject_id", "action", "period"})
_CSV_FIELDS = [
    *("action", "kind", "path", "metricKey", "orgId", "thresholdId", "subjectType"),
    *("subjectId", "thresholdAction", "period", "field", "before", "after", "note"),
]


@click.command()
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option(
    "--prune",
    is_flag=True,
    help="Also delete the metrics and thresholds FILE does not declare (a deleted metric's "
    "records stay in the store).",
)
@pass_state
def apply(state: CliState, file: Path, dry_run: bool, prune: bool) -> None:
    """Make the metrics and thresholds in the store match FILE (YAML or TOML).

    FILE declares metrics, notification channels and thresholds (see
    docs/apply.md). The plan is printed first: what is created, updated
    (field by field, before and after), deleted or unchanged; then it is
    applied, unless --dry-run. The whole file and plan are checked before
    anything changes: a mistake (an unknown key, a precision that cannot
    change, a threshold on a missing metric) is an error naming the file and
    the place, and nothing is written. Applying the same file again changes
    nothing. Limits are exact decimals, never floats. Without --prune, what
    the store holds beyond FILE is kept.

    Exit status: 0 when applied or nothing differs; with --dry-run, 4 (drift)
    when the store differs from FILE, so CI can check that they agree.

    \b
    Example:
        tsmeter apply tsmeter.yaml --dry-run
        tsmeter apply tsmeter.yaml
        tsmeter --format json apply tsmeter.toml --prune
    """
    desired = load(file)  # a file that is not valid never opens the store
    meter = state.meter()
    plan = meter.plan(desired, prune=prune)
    if state.fmt == "json":
        emit_one(state, plan_document(plan, dry_run))
    elif state.fmt == "csv":
        emit_list(state, _csv_rows(plan), [], fields=_CSV_FIELDS)
    else:
        for line in plan_lines(plan, state):
            click.echo(line)
    if not plan.changed:
        if state.fmt == "table":
            click.echo(f"No changes: the store matches {visible(plan.source)}.")
        return
    if dry_run:
        if state.fmt == "table":
            click.echo("Dry run: nothing was changed.")
        click.get_current_context().exit(ExitCode.DRIFT)  # the store differs from the file
    pending = len(plan.pending)
    with progress(pending, "Applying", step=max(1, pending // 100)) as (advance, _say):
        meter.apply(plan, on_step=lambda _step: advance(1))
    if state.fmt == "table":
        click.echo(f"Applied {pending} change{'s' if pending != 1 else ''}.")


def plan_lines(plan: Plan, state: CliState) -> list[str]:
    """The plan as text: a summary, a table of what changes (one row per field), notes."""
    lines = [f"Plan for {visible(plan.source)}: {plan.summary()}."]
    rows: list[list[str]] = []
    zone = state.zone()
    for step in plan.pending:
        shown = [c for c in step.changes if step.action == "update" or (
            step.action == "create" and c.field not in _NAMED)]  # fmt: skip
        for change in shown or [Change("", None, None)]:
            before = _cell(change.field, change.before) if step.action == "update" else ""
            rows.append([step.action, step.kind, cell_text(step.metric_key, zone),
                         cell_text(step.org_id, zone), _which(step), change.field, before,
                         _cell(change.field, change.after) if change.field else ""])  # fmt: skip
    if rows:
        lines += ["", *table_lines(_HEADERS, rows, set()), ""]
    for step in plan.pending:
        if step.note:
            lines.append(f"Note: {step.kind} {cell_text(step.metric_key)} {step.note}.")
    return lines


def _which(step: Step) -> str:
    """A threshold as the table names it: subjects, action and period (what tells two
    thresholds of one metric apart)."""
    item = step.item
    if not isinstance(item, UsageThreshold):
        return ""
    period = f" {item.period_type.value}" if item.period_type is not None else ""
    return cell_text(f"{item.subject_type} {item.subject_id} {item.action.value}{period}")


def _shown(field: str, value: Any) -> Any:
    """A value for display: a webhook without its secrets."""
    if field == "notify_webhook" and isinstance(value, str):
        return mask_url(value)
    return value


def _cell(field: str, value: Any) -> str:
    return "none" if value is None else cell_text(_shown(field, value))


def _step_doc(step: Step) -> dict[str, Any]:
    item = step.item
    threshold = item if isinstance(item, UsageThreshold) else None
    doc: dict[str, Any] = {
        "action": step.action,
        "kind": step.kind,
        "path": step.path,
        "metricKey": step.metric_key,
        "orgId": step.org_id,
    }
    if threshold is not None:
        doc.update(thresholdId=threshold.id, subjectType=threshold.subject_type,
                   subjectId=threshold.subject_id, thresholdAction=threshold.action,
                   period=threshold.period_type)  # fmt: skip
    doc["note"] = step.note or None
    doc["changes"] = [
        {"field": c.field, "before": _shown(c.field, c.before), "after": _shown(c.field, c.after)}
        for c in step.changes
    ]
    return doc


def plan_document(plan: Plan, dry_run: bool) -> dict[str, Any]:
    """The plan as one JSON document: what is applied (``applied``: false with --dry-run or
    when nothing changes), the counts, and every step with its field changes."""
    metrics, thresholds = plan.kept
    return {
        "file": plan.source,
        "dryRun": dry_run,
        "prune": plan.prune,
        "changed": plan.changed,
        "applied": plan.changed and not dry_run,
        "summary": plan.counts(),
        "kept": {"metrics": metrics, "thresholds": thresholds},
        "steps": [_step_doc(step) for step in plan.steps],
    }


def _csv_rows(plan: Plan) -> list[Mapping[str, Any]]:
    """One row per changed field (a step without field changes: one row)."""
    rows: list[Mapping[str, Any]] = []
    for step in plan.steps:
        doc = _step_doc(step)
        changes = doc.pop("changes") or [{"field": None, "before": None, "after": None}]
        rows.extend({**doc, **change} for change in changes)
    return rows
