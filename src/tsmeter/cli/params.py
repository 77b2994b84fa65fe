"""Options and argument types shared by several commands."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tsmeter.domain import AggregationType, PeriodType, ResetPeriod, ThresholdAction

__all__ = [
    "ACTIONS",
    "AGGREGATIONS",
    "NUMBER",
    "PERIODS",
    "RESET_PERIODS",
    "Number",
    "json_object",
    "org_option",
    "parse_number",
    "range_options",
    "subject_options",
    "usage_error",
]

F = TypeVar("F", bound=Callable[..., Any])

PERIODS = click.Choice([p.value.lower() for p in PeriodType], case_sensitive=False)
RESET_PERIODS = click.Choice([p.value.lower() for p in ResetPeriod], case_sensitive=False)
AGGREGATIONS = click.Choice([a.value.lower() for a in AggregationType], case_sensitive=False)
ACTIONS = click.Choice([a.value.lower() for a in ThresholdAction], case_sensitive=False)


_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_number(text: str) -> float:
    """A finite number written in plain ASCII decimal notation, or ValueError saying why.

    Python's ``float()`` (and so click's FLOAT) also takes ``1_000``, Arabic-Indic digits,
    ``nan``, ``inf`` and surrounding spaces, and turns ``1e-400`` into 0 and ``1e400`` into
    infinity; a quantity must never be reinterpreted like that, so those are refused.

    >>> parse_number("-3.5"), parse_number("1e6"), parse_number(".5")
    (-3.5, 1000000.0, 0.5)
    >>> parse_number("1_000")
    Traceback (most recent call last):
    ValueError: expected a finite number in plain decimal notation (12, -3.5, 1e6), got '1_000'
    """
    if not _PLAIN_NUMBER.fullmatch(text):
        raise ValueError(
            f"expected a finite number in plain decimal notation (12, -3.5, 1e6), got {text!r}"
        )
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text!r} is too large: it would become infinity")
    mantissa = text.lower().split("e")[0]
    if value == 0 and mantissa.strip("+-.0"):
        raise ValueError(f"{text!r} is too small: it would become 0")
    return value


if TYPE_CHECKING:  # generic from click 8.2 on; 8.1's is not subscriptable at run time
    _NumberBase = click.ParamType[float]
else:
    _NumberBase = click.ParamType


class Number(_NumberBase):
    """A click parameter type for numbers that refuses what :func:`parse_number` refuses.

    Example: ``@click.argument("quantity", type=NUMBER)``.
    """

    name = "number"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """The number as a float; a usage error naming the parameter otherwise."""
        if isinstance(value, float):
            return value
        try:
            return parse_number(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


NUMBER = Number()


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
