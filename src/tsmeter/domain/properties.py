"""Record properties a metric declares: its dimensions (what usage can be grouped and
filtered by) and, for a UNIQUE_COUNT metric, the property whose distinct values are counted.

A property is a top-level key of a record's ``metadata``. Its name is declared by the metric
(an identifier: a letter or ``_``, then letters, digits or ``_``, at most 64 characters), so
it can stand as a JSON path, a column alias or an InfluxDB tag key without quoting rules of
its own. Its values are data: a string (1–256 characters, no control characters), an integer
or a boolean, kept as text (``42``, ``true``), so the same value reads back the same from
every store. A float is refused (``1.0`` and ``1`` would be two values), as are objects and
lists.

>>> dimension_values(("model",), {"model": "gpt-4o, mini"}, "metadata")
('gpt-4o, mini',)
>>> dimension_values(("model", "region"), {"region": 3}, "metadata")
(None, '3')
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import msgspec

from tsmeter.domain.validation import check_name
from tsmeter.errors import ValidationError

__all__ = [
    "MAX_DIMENSIONS",
    "MAX_DIMENSION_VALUES",
    "NS_PER",
    "PROPERTY_NAME",
    "TimeUnit",
    "check_property_name",
    "dimension_values",
    "property_value",
    "stored_values",
]

_decode = msgspec.json.Decoder().decode
#: what a declared property name looks like
PROPERTY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
#: the most dimensions one metric declares
MAX_DIMENSIONS = 8
#: the most distinct values one dimension of one metric may take (InfluxDB keeps each as a
#: tag value; its own default limit per tag is 100,000)
MAX_DIMENSION_VALUES = 10_000


class TimeUnit(StrEnum):
    """The time unit a TIME_WEIGHTED_SUM is reported in: the value held times this unit
    (``HOUR``: GB-hours for a metric in GB)."""

    SECOND = "SECOND"
    MINUTE = "MINUTE"
    HOUR = "HOUR"
    DAY = "DAY"


#: nanoseconds in each time unit (a DAY is 24 hours of held value, whatever the calendar)
NS_PER = {
    TimeUnit.SECOND: 1_000_000_000,
    TimeUnit.MINUTE: 60_000_000_000,
    TimeUnit.HOUR: 3_600_000_000_000,
    TimeUnit.DAY: 86_400_000_000_000,
}


def check_property_name(field: str, value: object) -> str:
    """``value`` if it is a property name a metric may declare.

    >>> check_property_name("dimensions[0].name", "region")
    'region'
    >>> check_property_name("uniqueProperty", "user id")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    tsmeter.errors.ValidationError: uniqueProperty: must be a letter ... (got 'user id')
    """
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if not PROPERTY_NAME.fullmatch(value):
        shown = value if len(value) <= 70 else value[:67] + "..."
        rule = "must be a letter or _ followed by at most 63 letters, digits or _"
        raise ValidationError(field, f"{rule} (got {shown!r})")
    return value


def property_value(field: str, value: object) -> str:
    """A property's value as tsmeter keeps it: strings as given, integers in decimal, booleans
    as ``true``/``false``.

    >>> property_value("metadata.seats", 12), property_value("metadata.beta", True)
    ('12', 'true')
    >>> property_value("metadata.model", 1.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    tsmeter.errors.ValidationError: metadata.model: must be a string, an integer ... got float
    """
    if isinstance(value, str):
        return check_name(field, value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    raise ValidationError(
        field, f"must be a string, an integer or a boolean, got {type(value).__name__}"
    )


def dimension_values(
    names: Sequence[str], metadata: Mapping[str, Any] | None, field: str
) -> tuple[str | None, ...]:
    """The value of each dimension ``names`` in a record's ``metadata`` (None where the record
    does not have it); ``field`` names the metadata in errors."""
    if not metadata:
        return (None,) * len(names)
    out: list[str | None] = []
    for name in names:
        value = metadata.get(name)
        out.append(None if value is None else property_value(f"{field}.{name}", value))
    return tuple(out)


def stored_values(names: Sequence[str], metadata: str | None) -> tuple[str | None, ...]:
    """The values of properties ``names`` in a stored record's metadata (JSON text), as
    reads group and count them: kept as :func:`property_value` keeps them, None where the
    record has none. Never raises: a value recording refuses (a float, a list, an empty
    string; a record stored before its metric declared the property) counts as no value, as
    on InfluxDB, where such a value has no tag; metadata that is not a JSON object has none.

    >>> stored_values(("model", "seats", "beta", "x"), '{"model": "o3", "seats": 3, "x": 0.5}')
    ('o3', '3', None, None)
    """
    if not metadata:
        return (None,) * len(names)
    try:
        doc = _decode(metadata)
    except (msgspec.DecodeError, UnicodeError):
        return (None,) * len(names)
    if doc.__class__ is not dict:
        return (None,) * len(names)
    out: list[str | None] = []
    for name in names:
        value = doc.get(name)
        if value.__class__ is str and 0 < len(value) <= 64 and value.isprintable():
            out.append(value)  # the common case, valid without the full check
        else:
            out.append(_stored(name, value))
    return tuple(out)


def _stored(name: str, value: Any) -> str | None:
    if value is None:
        return None
    try:
        return property_value(name, value)
    except ValidationError:
        return None
