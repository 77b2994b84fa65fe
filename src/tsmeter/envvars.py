"""Parsers for settings read from environment variables: each takes the variable's name
(for the error) and its raw text, and returns the value or raises ValidationError.

>>> integer("TSMETER_SMTP_PORT", "587")
587
>>> boolean("X", "off")
False
"""

from __future__ import annotations

from tsmeter.errors import ValidationError

__all__ = ["boolean", "integer", "seconds", "text"]


def text(env: str, raw: str) -> str:
    """The text as given."""
    return raw


def integer(env: str, raw: str) -> int:
    """A whole number."""
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(env, f"must be an integer, got {raw!r}") from None


def seconds(env: str, raw: str) -> float:
    """A number of seconds."""
    try:
        return float(raw)
    except ValueError:
        raise ValidationError(env, f"must be a number of seconds, got {raw!r}") from None


def boolean(env: str, raw: str) -> bool:
    """true/false, 1/0, yes/no, on/off."""
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValidationError(env, f"must be true or false, got {raw!r}")
