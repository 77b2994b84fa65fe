"""Options and argument types shared by several commands."""

from __future__ import annotations

import decimal
import json
import math
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tsmeter.domain import AggregationType, PeriodType, ResetPeriod, Rounding, ThresholdAction
from tsmeter.errors import ValidationError

__all__ = [
    "ACTIONS",
    "AGGREGATIONS",
    "NUMBER",
    "PERIODS",
    "RESET_PERIODS",
    "ROUNDINGS",
    "TIME_FORMS",
    "Number",
    "calendar_date",
    "check_exact",
    "json_object",
    "org_option",
    "parse_decimal_text",
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
#: ``--rounding``: a :class:`~tsmeter.domain.Rounding`, or ``refuse`` (values with more
#: decimal places than the metric keeps are errors)
ROUNDINGS = click.Choice([r.value.lower() for r in Rounding] + ["refuse"], case_sensitive=False)


_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PLAIN = "expected a finite number in plain decimal notation (12, -3.5, 1e6), got "
#: the smallest exponent taken as written: a non-zero value below 10**-990 has more decimal
#: places than any metric keeps, and is too far below them to round reliably
_MIN_ADJUSTED = -990
_MAX_SHOWN = 40
_MAX_DIGITS = 40  # an integral value with more digits keeps its exponent (no metric holds it)


def _shown(text: str) -> str:
    """``text`` quoted for an error message, shortened (hostile input must not make huge
    error lines)."""
    if len(text) <= _MAX_SHOWN:
        return repr(text)
    return f"{text[: _MAX_SHOWN // 2]!r}... ({len(text)} characters)"


def parse_decimal_text(text: str) -> Decimal:
    """A number written in plain ASCII decimal notation, as the exact Decimal it says (never
    through a float), or ValueError saying why.

    ``Decimal()`` also takes ``1_000``, Arabic-Indic digits, ``nan``, ``inf`` and surrounding
    spaces; a quantity must never be reinterpreted like that, so those are refused. Whether
    the value has too many decimal places or is too large is for its metric to say.

    >>> parse_decimal_text("-3.5"), parse_decimal_text("1e6"), parse_decimal_text(".10")
    (Decimal('-3.5'), Decimal('1000000'), Decimal('0.10'))
    >>> parse_decimal_text("1_000")
    Traceback (most recent call last):
    ValueError: expected a finite number in plain decimal notation (12, -3.5, 1e6), got '1_000'
    """
    if not _PLAIN_NUMBER.fullmatch(text):
        raise ValueError(_PLAIN + _shown(text))
    try:
        number = Decimal(text)
    except decimal.InvalidOperation:  # an exponent beyond what Decimal holds
        raise ValueError(f"{_shown(text)} is out of range") from None
    return check_exact(number, text)


def check_exact(number: Decimal, text: str) -> Decimal:
    """``number`` (written as ``text``) if it can be taken as written, else ValueError: a
    non-zero value more than 990 places after the point is refused, never taken as 0. An
    integral value written with an exponent (``1e6``) comes back without it (``1000000``),
    so it prints as people write it.

    >>> check_exact(Decimal("1E+6"), "1e6"), check_exact(Decimal("2.50"), "2.50")
    (Decimal('1000000'), Decimal('2.50'))
    """
    if number and number.adjusted() < _MIN_ADJUSTED:
        raise ValueError(
            f"{_shown(text)} is too small: it has more than {-_MIN_ADJUSTED} decimal places"
        )
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0 and number.adjusted() <= _MAX_DIGITS:
        return Decimal(int(number))  # exact: an integer of at most 41 digits
    return number


def parse_number(text: str) -> float:
    """A finite number written in plain ASCII decimal notation as a float (for settings such
    as durations, never for quantities: see :func:`parse_decimal_text`), or ValueError.

    >>> parse_number("-3.5"), parse_number("1e6"), parse_number(".5")
    (-3.5, 1000000.0, 0.5)
    """
    if not _PLAIN_NUMBER.fullmatch(text):
        raise ValueError(_PLAIN + _shown(text))
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{_shown(text)} is too large: it would become infinity")
    mantissa = text.lower().split("e")[0]
    if value == 0 and mantissa.strip("+-.0"):
        raise ValueError(f"{_shown(text)} is too small: it would become 0")
    return value


if TYPE_CHECKING:  # generic from click 8.2 on; 8.1's is not subscriptable at run time
    _NumberBase = click.ParamType[Decimal]
else:
    _NumberBase = click.ParamType


class Number(_NumberBase):
    """A click parameter type for exact decimal numbers: what :func:`parse_decimal_text`
    takes, as a Decimal (never a float).

    Example: ``@click.argument("quantity", type=NUMBER)``.
    """

    name = "number"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Decimal:
        """The number as a Decimal; a usage error naming the parameter otherwise."""
        if isinstance(value, Decimal):
            return value
        if isinstance(value, int) and not isinstance(value, bool):  # a default such as 1
            return Decimal(value)
        try:
            return parse_decimal_text(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


NUMBER = Number()


_YEAR = re.compile(r"[0-9]{4}")
_MONTH = re.compile(r"([0-9]{4})-([0-9]{1,2})")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
#: what a --from/--to value may be, for help texts and errors
TIME_FORMS = "ISO-8601 with offset, a date 2026-11-05, a month 2026-11 or a year 2026"


def calendar_date(option: str, text: str) -> date | None:
    """The day a ``--from``/``--to`` value names by the calendar: a year ``2026`` (1 January),
    a month ``2026-11`` (its 1st) or a date ``2026-11-05``; None for anything else (a
    timestamp). A misspelt or impossible one is a :class:`~tsmeter.errors.ValidationError`
    naming ``option``, never read as something else.

    >>> calendar_date("--from", "2026"), calendar_date("--from", "2026-11")
    (datetime.date(2026, 1, 1), datetime.date(2026, 11, 1))
    >>> calendar_date("--to", "2026-11-05"), calendar_date("--to", "2026-11-05T10:00:00Z")
    (datetime.date(2026, 11, 5), None)
    >>> calendar_date("--from", "2026-13")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    tsmeter.errors.ValidationError: --from: month 13 does not exist: expected YYYY-MM with a ...
    """
    value = text.strip()
    if month := _MONTH.fullmatch(value):
        number = month.group(2)
        if len(number) != 2:
            raise ValidationError(
                option, f"expected YYYY-MM with a two-digit month (2026-01), got {text!r}"
            )
        if not 1 <= int(number) <= 12:
            raise ValidationError(
                option,
                f"month {number} does not exist: expected YYYY-MM with a month from 01 to 12, "
                f"got {text!r}",
            )
        value = f"{value}-01"
    elif _YEAR.fullmatch(value):
        value = f"{value}-01-01"
    elif not _DAY.fullmatch(value):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:  # year 0000, 2026-02-30
        raise ValidationError(option, f"no such date {text!r}") from None


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
            help=f"End of the range, exclusive ({TIME_FORMS}: its start in the time zone); {what}.",
        )(fn)
        return click.option(
            "--from",
            "start",
            metavar="TIME",
            default=None,
            help=f"Start of the range, inclusive ({TIME_FORMS}: its start in the time zone); "
            f"{what}.",
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
