"""Options and argument types shared by several commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tsmeter.domain import AggregationType, PeriodType, ResetPeriod, ThresholdAction

__all__ = [
    "ACTIONS",
    "AGGREGATIONS",
    "PERIODS",
    "RESET_PERIODS",
    "json_object",
    "org_option",
    "range_options",
    "subject_options",
    "usage_error",
]

F = TypeVar("F", bound=Callable[..., Any])

PERIODS = click.Choice([p.value.lower() for p in PeriodType], case_sensitive=False)
RESET_PERIODS = click.Choice([p.value.lower() for p in ResetPeriod], case_sensitive=False)
AGGREGATIONS = click.Choice([a.value.lower() for a in AggregationType], case_sensitive=False)
ACTIONS = click.Choice([a.value.lower() for a in ThresholdAction], case_sensitive=False)


def org_option(help_text: str = "Organisation scope (default: global).") -> Callable[[F], F]:
    """``--org-id ORG``: the organisation whose metric definitions apply."""
    return click.option("--org-id", "org_id", metavar="ORG", default=None, help=help_text)


def range_options(what: str) -> Callable[[F], F]:
    """``--from`` and ``--to``: a half-open time range ``[from, to)``."""

    def decorate(fn: F) -> F:
        fn = click.option(
            "--to",
            "end",
            metavar="TIME",
            default=None,
            help=f"End of the range, exclusive (ISO-8601 with offset, or a date); {what}.",
        )(fn)
        return click.option(
            "--from",
            "start",
            metavar="TIME",
            default=None,
            help=f"Start of the range, inclusive (ISO-8601 with offset, or a date); {what}.",
        )(fn)

    return decorate


def subject_options(fn: F) -> F:
    """``--subject-type`` and ``--subject-id`` filters."""
    fn = click.option("--subject-id", metavar="ID", default=None, help="Only this subject.")(fn)
    return click.option(
        "--subject-type", metavar="TYPE", default=None, help="Only subjects of this type."
    )(fn)


def json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Click callback: parse an option's value as a JSON object."""
    if value is None:
        return None
    try:
        loaded = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", ctx, param) from None
    if not isinstance(loaded, dict):
        raise click.BadParameter(f"must be a JSON object, got {value!r}", ctx, param)
    return loaded


def usage_error(message: str) -> click.UsageError:
    """A usage error about the command being run (so its message can point at its help)."""
    return click.UsageError(message, click.get_current_context(silent=True))
