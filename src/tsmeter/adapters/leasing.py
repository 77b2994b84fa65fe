"""Argument checks shared by the :class:`tsmeter.ports.JobLeases` adapters, so that every
adapter refuses the same bad input with the same error."""

from __future__ import annotations

import math

from tsmeter.errors import ValidationError

__all__ = ["check_claim", "check_name", "ttl_ns"]

_MAX_TTL_S = 86400.0 * 365


def check_name(value: object, field: str = "holder") -> str:
    """``value`` if it is a non-empty string without NUL (PostgreSQL text cannot hold one)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, f"must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise ValidationError(field, "must not contain a NUL character")
    return value


def ttl_ns(ttl_s: float) -> int:
    """A lease's time to live in ns; ValidationError unless it is a positive, finite number of
    seconds (at most a year)."""
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
        raise ValidationError("ttl_s", f"must be a number of seconds, got {ttl_s!r}")
    if not math.isfinite(ttl_s) or not 0 < ttl_s <= _MAX_TTL_S:
        raise ValidationError("ttl_s", f"must be > 0 and at most a year, got {ttl_s!r}")
    return round(ttl_s * 1_000_000_000)


def check_claim(job: object, period_start_ns: object) -> str:
    """The job name, once both it and the period start (an int of ns) are valid."""
    if isinstance(period_start_ns, bool) or not isinstance(period_start_ns, int):
        raise ValidationError("period_start_ns", f"must be an int, got {period_start_ns!r}")
    if not -(2**63) <= period_start_ns < 2**63:
        raise ValidationError("period_start_ns", "must fit in 64 bits")
    return check_name(job, "job")
