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
#: nesting levels of a record's metadata (the object itself is level 1); deeper input is
#: refused at intake, so every reader and exporter can serialise what was stored
MAX_METADATA_DEPTH = 32
#: the largest magnitude of a quantity: sums of billions of records stay finite, and
#: integers up to it are exact in a float
MAX_QUANTITY = 1e15
#: the longest timestamp string parsed (ISO-8601 with offset and nanoseconds is 35)
MAX_TIMESTAMP_LENGTH = 64
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
# InfluxDB keeps nanoseconds since 1970 in a signed 64-bit integer: stay inside it.
MIN_TIMESTAMP = EPOCH
MAX_TIMESTAMP = datetime(2262, 1, 1, tzinfo=UTC)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FRACTION = re.compile(r"[.,]([0-9]{7,})")


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
    """Return ``value`` as a float if it is a finite number within ±MAX_QUANTITY (booleans
    are not numbers); a non-zero value too small for a float is refused, not made 0.

    >>> check_quantity("quantity", 2)
    2.0
    >>> check_quantity("quantity", 1e308)
    Traceback (most recent call last):
    tsmeter.errors.ValidationError: quantity: must be between -1e15 and 1e15, got 1e+308
    """
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValidationError(field, f"must be a number, got {type(value).__name__}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValidationError(field, f"must be a finite number, got {_shown(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ValidationError(field, f"{_RANGE}, got {_shown(value)}") from None
    if math.isnan(number) or (math.isinf(number) and isinstance(value, float)):
        raise ValidationError(field, f"must be a finite number, got {_shown(value)}")
    if not -MAX_QUANTITY <= number <= MAX_QUANTITY:
        raise ValidationError(field, f"{_RANGE}, got {_shown(value)}")
    if number == 0.0 and value != 0:
        raise ValidationError(field, f"is too small to represent, got {_shown(value)}")
    return number


_LIMIT = f"{MAX_QUANTITY:g}".replace("e+", "e")
_RANGE = f"must be between -{_LIMIT} and {_LIMIT}"


def _shown(value: object, limit: int = 40) -> str:
    """``value`` for an error message, shortened: hostile input must not make huge errors."""
    text = repr(value) if isinstance(value, float) else str(value)
    if len(text) > limit:
        return f"{text[: limit // 2]}... ({len(text)} characters)"
    return text


def parse_timestamp(field: str, value: object) -> datetime:
    """Return an aware UTC datetime from a datetime or an ISO-8601 string with an offset.

    Naive values are rejected, never guessed; so are non-zero digits beyond the
    microsecond (never truncated silently).

    >>> parse_timestamp("timestamp", "2026-03-29T01:30:00+01:00")
    datetime.datetime(2026, 3, 29, 0, 30, tzinfo=datetime.timezone.utc)
    """
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_TIMESTAMP_LENGTH:
            raise ValidationError(
                field, f"not an ISO-8601 timestamp ({len(text)} characters, at most"
                f" {MAX_TIMESTAMP_LENGTH}): {_shown(value)!r}"
            )  # fmt: skip
        for fraction in _FRACTION.finditer(text):
            if fraction.group(1)[6:].strip("0"):
                raise ValidationError(
                    field, f"has sub-microsecond digits ({value!r}); tsmeter keeps microseconds:"
                    " round the timestamp or drop the digits after the sixth"
                )  # fmt: skip
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

    At most MAX_METADATA_DEPTH levels deep and MAX_METADATA_BYTES as JSON, checked by a walk
    without recursion before anything is serialised (so 5,000 levels are a clear error).

    >>> check_metadata("metadata", {"region": "eu"})
    '{"region":"eu"}'
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError(field, f"must be a JSON object, got {type(value).__name__}")
    if not value:
        return None
    _check_shape(field, value)
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(field, f"must be JSON-serialisable: {_shown(exc, 200)}") from None
    _check_encodable(field, text)
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise ValidationError(field, f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    return text


def _check_shape(field: str, value: dict[Any, Any]) -> None:
    """Refuse metadata nested deeper than MAX_METADATA_DEPTH, or whose JSON would surely pass
    MAX_METADATA_BYTES, walking it with a stack (each container and item is visited once,
    and the walk stops as soon as the size is certain to be too large)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    size = 0  # a lower bound of the JSON text's length
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list | tuple):
            if depth > MAX_METADATA_DEPTH:
                raise ValidationError(
                    field, f"must be nested at most {MAX_METADATA_DEPTH} levels deep"
                )
            size += 2 + max(0, len(node) - 1)  # brackets and commas
            if isinstance(node, dict):
                for key, item in node.items():
                    size += (len(key) if isinstance(key, str) else 0) + 3  # quotes and colon
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, str):
            size += len(node) + 2
        else:
            size += 1
        if size > MAX_METADATA_BYTES:
            raise ValidationError(field, f"must be at most {MAX_METADATA_BYTES} bytes as JSON")


def load_metadata(text: str | None) -> dict[str, Any]:
    """The metadata object stored as JSON text (empty dict for ``None``)."""
    if not text:
        return {}
    loaded: dict[str, Any] = json.loads(text)
    return loaded
