"""Exact quantities: decimals in, scaled 64-bit integers stored, decimals out.

A metric keeps ``precision`` decimal places. A quantity is stored as *units*: the value times
``10 ** precision``, an integer that fits a signed 64-bit field, so every store sums it exactly
and gives the same digits. Values come in as int, float (by its shortest repr: ``0.1`` is one
tenth), str or Decimal; a value with more decimal places than the metric keeps is refused,
unless the metric declares a :class:`Rounding`. A value or a total outside the 64-bit range is
an error, never a wrap-around.

>>> to_units("quantity", 0.1, 6, None)
100000
>>> from_units(500100000, 6)
Decimal('500.100000')
>>> to_units("quantity", "0.125", 2, None)  # doctest: +ELLIPSIS
Traceback (most recent call last):
tsmeter.errors.ValidationError: quantity: has 3 decimal places, the metric keeps 2 (got 0.125); ...
>>> to_units("quantity", "0.125", 2, Rounding.HALF_EVEN)
12
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from tsmeter.errors import ValidationError

__all__ = [
    "DEFAULT_PRECISION",
    "MAX_PRECISION",
    "MAX_UNITS",
    "Rounding",
    "aggregate_units",
    "avg_units",
    "check_units",
    "from_units",
    "parse_decimal",
    "to_units",
]

#: decimal places a metric keeps unless it says otherwise: micro-units hold cents, sub-cent
#: prices, GB-hours and seconds to the microsecond, and still leave ±9.2 trillion for a value
#: or a period's total (byte counters and other large integers should declare precision 0)
DEFAULT_PRECISION = 6
#: the most decimal places a metric may keep: at 12 a total may still reach ±9.2 million; more
#: would leave too little range for a period's sum
MAX_PRECISION = 12
#: the largest magnitude of a stored value or total, in units (a signed 64-bit integer)
MAX_UNITS = 2**63 - 1
#: the longest text accepted as a number (a 64-bit integer with 12 decimals and a sign is 21)
MAX_TEXT = 64
_SCALES = tuple(10**p for p in range(MAX_PRECISION + 1))
_TINY = -(MAX_PRECISION + 2)  # the exponent below which a value is under 1/100 of any unit
_TINY_VALUE = Decimal(1).scaleb(_TINY - 1)
_EXACT = 2**53  # floats below this magnitude hold every integer exactly


class Rounding(StrEnum):
    """How a value with more decimal places than its metric keeps is rounded (a metric
    without one refuses such values). ``UP`` rounds away from zero, ``DOWN`` toward it;
    ``CEILING`` and ``FLOOR`` toward +∞ and −∞."""

    HALF_EVEN = "HALF_EVEN"
    HALF_UP = "HALF_UP"
    UP = "UP"
    DOWN = "DOWN"
    CEILING = "CEILING"
    FLOOR = "FLOOR"

    @property
    def mode(self) -> str:
        """The :mod:`decimal` rounding constant."""
        return _MODES[self]


_MODES = {
    Rounding.HALF_EVEN: decimal.ROUND_HALF_EVEN,
    Rounding.HALF_UP: decimal.ROUND_HALF_UP,
    Rounding.UP: decimal.ROUND_UP,
    Rounding.DOWN: decimal.ROUND_DOWN,
    Rounding.CEILING: decimal.ROUND_CEILING,
    Rounding.FLOOR: decimal.ROUND_FLOOR,
}
# exact integer arithmetic on values of up to about 40 digits, whatever the caller's context
_CONTEXT = decimal.Context(prec=60, Emax=999, Emin=-999, traps=[decimal.InvalidOperation])


def _shown(value: object, limit: int = 40) -> str:
    text = repr(value) if isinstance(value, float) else str(value)
    return text if len(text) <= limit else f"{text[: limit // 2]}... ({len(text)} characters)"


def parse_decimal(field: str, value: object) -> Decimal:
    """``value`` as a finite Decimal: an int, a float by its shortest repr, a str or a Decimal
    (booleans are not numbers).

    >>> parse_decimal("threshold", 0.1), parse_decimal("threshold", " 12.50 ")
    (Decimal('0.1'), Decimal('12.50'))
    """
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, bool):
        raise ValidationError(field, "must be a number, got bool")
    elif isinstance(value, int):
        return Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_TEXT:
            raise ValidationError(field, f"must be a decimal number, got {_shown(value)!r}")
        try:
            number = Decimal(text.replace("_", "x"))  # Decimal() accepts "1_000"; JSON does not
        except decimal.InvalidOperation:
            raise ValidationError(
                field, f"must be a decimal number, got {_shown(value)!r}"
            ) from None
    else:
        raise ValidationError(field, f"must be a number, got {type(value).__name__}")
    if not number.is_finite():
        raise ValidationError(field, f"must be a finite number, got {_shown(value)}")
    return number


def to_units(field: str, value: object, precision: int, rounding: Rounding | None) -> int:
    """``value`` in units of ``10 ** -precision``; more decimal places than ``precision`` are
    rounded by ``rounding``, or refused where it is None; beyond ±MAX_UNITS is refused.

    >>> to_units("quantity", 2, 0, None), to_units("quantity", -1.5, 3, None)
    (2, -1500)
    """
    scale = _SCALES[precision]
    if type(value) is int:
        whole_units: int = value * scale
        if -MAX_UNITS <= whole_units <= MAX_UNITS:
            return whole_units
        raise _range(field, value, precision)
    if type(value) is float:
        scaled: float = value * scale
        if -_EXACT < scaled < _EXACT:
            near: int = round(scaled)
            if near / scale == value:  # the shortest repr has at most ``precision`` places
                return near
    number = parse_decimal(field, value)
    if number.adjusted() > 19 + MAX_PRECISION:
        raise _range(field, value, precision)
    if number and number.adjusted() < _TINY:
        if rounding is None:
            raise _places(field, value, number, precision)
        # below a hundredth of a unit at any precision: every mode rounds it as it rounds
        # this stand-in of the same sign (the exponent stays within the context's range)
        number = _TINY_VALUE.copy_sign(number)
    scaled_number = number.scaleb(precision, _CONTEXT)
    whole = scaled_number.to_integral_value(decimal.ROUND_DOWN, _CONTEXT)
    if whole != scaled_number:
        if rounding is None:
            raise _places(field, value, number, precision)
        whole = scaled_number.to_integral_value(_MODES[rounding], _CONTEXT)
    units = int(whole)
    if -MAX_UNITS <= units <= MAX_UNITS:
        return units
    raise _range(field, value, precision)


def _places(field: str, value: object, number: Decimal, precision: int) -> ValidationError:
    wide = decimal.Context(prec=60, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
    places = -number.normalize(wide).as_tuple().exponent  # type: ignore[operator]
    return ValidationError(
        field, f"has {places} decimal places, the metric keeps {precision} (got"
        f" {_shown(value)}); round it, or declare the metric's rounding"
    )  # fmt: skip


def _range(field: str, value: object, precision: int) -> ValidationError:
    limit = from_units(MAX_UNITS, precision)
    return ValidationError(
        field, f"must be between -{limit} and {limit} at precision {precision}, got"
        f" {_shown(value)}"
    )  # fmt: skip


def from_units(units: int, precision: int) -> Decimal:
    """The Decimal of ``units`` at ``precision``, with exactly ``precision`` places.

    >>> from_units(-5, 2), from_units(7, 0)
    (Decimal('-0.05'), Decimal('7'))
    """
    return Decimal(units).scaleb(-precision, _CONTEXT)


def check_units(field: str, units: int) -> int:
    """``units`` if a 64-bit field holds it, else an error (a total never wraps around).

    >>> check_units("sum", 2**63)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    tsmeter.errors.ValidationError: sum: 9223372036854775808 units is beyond the 64-bit range...
    """
    if -MAX_UNITS <= units <= MAX_UNITS:
        return units
    raise ValidationError(field, f"{units} units is beyond the 64-bit range of a stored total")


def avg_units(total: int, count: int) -> int:
    """The mean of ``count`` values summing to ``total`` units, rounded half to even to a
    whole unit (the metric's precision): exact integer arithmetic, no float.

    >>> avg_units(5, 2), avg_units(7, 2), avg_units(-5, 2), avg_units(0, 0)
    (2, 4, -2, 0)
    """
    if count <= 0:
        return 0
    quotient, remainder = divmod(total, count)
    twice = 2 * remainder
    if twice > count or (twice == count and quotient % 2):
        quotient += 1
    return quotient


def time_weighted_units(held: int, unit_ns: int) -> int:
    """A time-weighted sum in units × time unit: ``held`` (units × nanoseconds, exact)
    divided by the nanoseconds of the time unit, rounded half to even to a whole unit (the
    metric's precision).

    >>> time_weighted_units(3 * 3_600_000_000_000, 3_600_000_000_000)  # 3 units for 1 h
    3
    >>> time_weighted_units(5 * 1_800_000_000_000, 3_600_000_000_000)  # 5 units for 30 min
    2
    """
    return avg_units(held, unit_ns)


class _Components(Protocol):
    @property
    def record_count(self) -> int: ...
    @property
    def sum(self) -> int: ...
    @property
    def min(self) -> int: ...
    @property
    def max(self) -> int: ...
    @property
    def last_value(self) -> int: ...


def aggregate_units(aggregation: str, components: _Components) -> int:
    """The value, in units, of a summary's components under an aggregation type (``COUNT``:
    the number of records, not units; ``AVG``: :func:`avg_units` of sum and count).

    >>> from types import SimpleNamespace as S
    >>> aggregate_units("AVG", S(record_count=3, sum=10, min=1, max=5, last_value=4))
    3
    """
    if aggregation == "COUNT":
        return components.record_count
    if aggregation == "SUM":
        return components.sum
    if aggregation == "AVG":
        return avg_units(components.sum, components.record_count)
    if aggregation == "MAX":
        return components.max
    if aggregation == "MIN":
        return components.min
    if aggregation == "LAST":
        return components.last_value
    raise ValueError(f"unknown aggregation type {aggregation!r}")
