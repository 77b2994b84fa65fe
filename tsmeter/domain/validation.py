"""Field rules shared by the pydantic models and the fast batch path.

Each checker takes the field's name (for the error) and the raw value, and
returns the clean value or raises :class:`~tsmeter.errors.ValidationError`.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tsmeter.errors import ValidationError

MAX_NAME_LENGTH = 256
MAX_METADATA_BYTES = 65_536
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
# InfluxDB keeps nanoseconds since 1970 in a signed 64-bit integer: stay inside it.
MIN_TIMESTAMP = EPOCH
MAX_TIMESTAMP = datetime(2262, 1, 1, tzinfo=UTC)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_name(field: str, value: object) -> str:
    """Return ``value`` if it is 1–256 characters without control characters.

    >>> check_name("subjectId", "org 1, \\"quoted\\"=x")
    'org 1, "quoted"=x'
    """
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if not value:
        raise ValidationError(field, "must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise ValidationError(field, f"must be at most {MAX_NAME_LENGTH} characters")
    bad = _CONTROL.search(value)
    if bad:
        raise ValidationError(field, f"must not contain control characters (found {bad.group()!r})")
    _check_encodable(field, value)
    return value


def _check_encodable(field: str, text: str) -> None:
    """Reject lone surrogates: text that has no UTF-8 form cannot be stored anywhere."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            field, f"must be valid Unicode (lone surrogate at position {exc.start})"
        ) from None


def check_quantity(field: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number (booleans are not numbers).

    >>> check_quantity("quantity", 2)
    2.0
    """
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValidationError(field, f"must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ValidationError(field, f"must be a finite number, got {value}") from None
    if not math.isfinite(number):
        raise ValidationError(field, f"must be a finite number, got {value}")
    return number


def parse_timestamp(field: str, value: object) -> datetime:
    """Return an aware UTC datetime from a datetime or an ISO-8601 string with an offset.

    Naive values are rejected, never guessed.

    >>> parse_timestamp("timestamp", "2026-03-29T01:30:00+01:00")
    datetime.datetime(2026, 3, 29, 0, 30, tzinfo=datetime.timezone.utc)
    """
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("z", "Z")):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(field, f"not an ISO-8601 timestamp: {value!r}") from None
    if not isinstance(value, datetime):
        raise ValidationError(
            field, f"must be a datetime or ISO-8601 string, got {type(value).__name__}"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            field, f"must carry a time zone (naive timestamp {value.isoformat()!r} rejected)"
        )
    value = value.astimezone(UTC)
    if not MIN_TIMESTAMP <= value < MAX_TIMESTAMP:
        raise ValidationError(field, f"must be between 1970 and 2261, got {value.isoformat()}")
    return value


def to_ns(value: datetime) -> int:
    """Nanoseconds since the Unix epoch of an aware datetime.

    >>> to_ns(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC))
    1000000000
    """
    return ((value - EPOCH) // _US) * 1000


def from_ns(ns: int) -> datetime:
    """The aware UTC datetime of nanoseconds since the epoch (microsecond precision)."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def check_metadata(field: str, value: object) -> str | None:
    """Return the metadata object as compact JSON text (``None`` for empty or missing).

    >>> check_metadata("metadata", {"region": "eu"})
    '{"region":"eu"}'
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError(field, f"must be a JSON object, got {type(value).__name__}")
    if not value:
        return None
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(field, f"must be JSON-serialisable: {exc}") from None
    _check_encodable(field, text)
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise ValidationError(field, f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    return text


def load_metadata(text: str | None) -> dict[str, Any]:
    """The metadata object stored as JSON text (empty dict for ``None``)."""
    if not text:
        return {}
    loaded: dict[str, Any] = json.loads(text)
    return loaded
