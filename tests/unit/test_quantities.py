"""Decimal quantities to 64-bit units and back, checked against Python's ``decimal`` with a
context wide enough to be exact (an independent computation, not the code under test)."""

from __future__ import annotations

import decimal
import random
from decimal import Decimal

import pytest

from tsmeter.domain.quantities import (
    MAX_UNITS,
    Rounding,
    avg_units,
    from_units,
    parse_decimal,
    to_units,
)
from tsmeter.errors import ValidationError

WIDE = decimal.Context(prec=5000, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


def expected_units(value: Decimal, precision: int, rounding: Rounding) -> int:
    """``value`` in units, rounded by ``rounding``, with a context that cannot round."""
    scaled = value.scaleb(precision, WIDE)
    return int(scaled.to_integral_value(rounding.mode, WIDE))


def test_random_decimals_round_as_decimal_does() -> None:
    """Thousands of random values, given as str, Decimal and float, in every rounding mode
    and precision, give the units Python's decimal gives; without a rounding mode a value
    with more places is refused naming the field."""
    rng = random.Random(21)
    for _ in range(3_000):
        precision = rng.randint(0, 12)
        digits = rng.randint(0, 16)
        places = rng.randint(0, 16)
        text = f"{'-' if rng.random() < 0.3 else ''}{rng.randrange(10**digits)}"
        value = Decimal(text).scaleb(-places)
        for rounding in Rounding:
            want = expected_units(value, precision, rounding)
            if abs(want) > MAX_UNITS:
                with pytest.raises(ValidationError, match=r"^quantity: must be between"):
                    to_units("quantity", str(value), precision, rounding)
                continue
            assert to_units("quantity", str(value), precision, rounding) == want
            assert to_units("quantity", value, precision, rounding) == want
        exact = value == value.quantize(Decimal(1).scaleb(-precision), context=WIDE)
        if exact and abs(expected_units(value, precision, Rounding.DOWN)) <= MAX_UNITS:
            assert to_units("quantity", value, precision, None) == int(
                value.scaleb(precision, WIDE)
            )
        elif not exact:
            with pytest.raises(ValidationError, match="decimal places"):
                to_units("quantity", value, precision, None)


def test_floats_are_read_by_their_shortest_repr() -> None:
    """A float is the decimal its repr shows (0.1 is one tenth), on the fast path and off it."""
    rng = random.Random(6)
    for _ in range(5_000):
        value = round(rng.uniform(-1e6, 1e6), rng.randint(0, 6))
        precision = rng.randint(6, 9)
        want = int(Decimal(repr(value)).scaleb(precision, WIDE))
        assert to_units("quantity", value, precision, None) == want
    assert to_units("quantity", 0.1, 1, None) == 1
    assert to_units("quantity", 1e18, 0, None) == 10**18  # beyond 2**53: the decimal path
    with pytest.raises(ValidationError, match="must be between"):
        to_units("quantity", 1e22, 0, None)
    with pytest.raises(ValidationError, match="decimal places"):
        to_units("quantity", 0.1 + 0.2, 6, None)  # 0.30000000000000004


@pytest.mark.parametrize("rounding", list(Rounding))
@pytest.mark.parametrize("text", ["1e-2000", "-1e-2000", "4e-15", "-5e-9", "5e-7"])
def test_tiny_values_round_like_decimal_never_silently_zero(text: str, rounding: Rounding) -> None:
    """Values far below a unit round as decimal rounds them (UP and CEILING give a unit), and
    without a rounding mode they are refused: never a silent zero."""
    value = Decimal(text)
    assert to_units("quantity", text, 6, rounding) == expected_units(value, 6, rounding)
    with pytest.raises(ValidationError, match="decimal places"):
        to_units("quantity", text, 6, None)


def test_the_64_bit_edge_and_bad_input() -> None:
    """±(2**63 - 1) units are accepted at every precision, one more is refused; booleans,
    non-finite values and non-numbers are refused naming the field."""
    for precision in (0, 6, 12):
        edge = from_units(MAX_UNITS, precision)
        assert to_units("q", edge, precision, None) == MAX_UNITS
        assert to_units("q", -edge, precision, None) == -MAX_UNITS
        beyond = edge + Decimal(1).scaleb(-precision)
        with pytest.raises(ValidationError, match=r"^q: must be between"):
            to_units("q", beyond, precision, None)
    for bad in (True, float("nan"), float("inf"), "nan", "Infinity", "1_000", "", "1e", None):
        with pytest.raises(ValidationError, match=r"^q: "):
            to_units("q", bad, 6, None)
    assert parse_decimal("q", " 12.50 ") == Decimal("12.50")


def test_avg_units_is_the_exact_mean_rounded_half_to_even() -> None:
    """The mean of integer units, rounded half to even, equals decimal's quotient quantized
    half to even, for random sums and counts of both signs."""
    rng = random.Random(3)
    for _ in range(20_000):
        count = rng.randint(1, 10**6)
        total = rng.randint(-(10**15), 10**15)
        want = (Decimal(total) / Decimal(count)).quantize(
            Decimal(1), rounding=decimal.ROUND_HALF_EVEN, context=WIDE
        )
        assert avg_units(total, count) == int(want)
