"""Dimension filters and groupings as text, the form the HTTP API's query and the CLI's options
take: ``where`` is ``NAME=VALUE`` (``region=eu``), or ``NAME=`` for the records that have no
value for the dimension; ``groupBy`` is dimension names, repeated or separated by commas.

A name is an identifier (see :data:`~tsmeter.domain.properties.PROPERTY_NAME`), so the first
``=`` ends it and the value is everything after it, ``=`` and commas included. A value is
never empty (see :func:`~tsmeter.domain.properties.property_value`), so ``NAME=`` is free to
mean "no value".

>>> parse_where(["region=eu", "model=gpt=4o, mini", "tier="])
{'region': 'eu', 'model': 'gpt=4o, mini', 'tier': None}
>>> where_texts({"region": "eu", "tier": None, "gpu": True})
['region=eu', 'tier=', 'gpu=true']
>>> parse_group_by(["model,region", "tier"])
('model', 'region', 'tier')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tsmeter.domain.properties import PROPERTY_NAME, property_value
from tsmeter.errors import ValidationError

__all__ = ["parse_group_by", "parse_where", "where_texts"]


def parse_where(texts: Iterable[str], field: str = "where") -> dict[str, str | None]:
    """``{name: value}`` of ``NAME=VALUE`` texts (``NAME=``: None, records without a value);
    ValidationError naming ``field`` for a text without ``=``, a name that is not an
    identifier, or a name given twice."""
    where: dict[str, str | None] = {}
    for text in texts:
        name, equals, value = text.partition("=")
        if not equals:
            raise ValidationError(
                field, f"{text!r}: must be NAME=VALUE (NAME= for records without a value)"
            )
        if not PROPERTY_NAME.fullmatch(name):
            raise ValidationError(field, f"{name!r} is not a dimension name")
        if name in where:
            raise ValidationError(field, f"{name!r} is given twice; give one value per dimension")
        where[name] = value or None
    return where


def where_texts(where: Mapping[str, object] | None) -> list[str]:
    """The ``NAME=VALUE`` texts of a filter (the inverse of :func:`parse_where`); a value is
    given as the Meter reads it (an int as its digits, a bool as ``true``)."""
    return [
        f"{name}={'' if value is None else property_value(f'where.{name}', value)}"
        for name, value in (where or {}).items()
    ]


def parse_group_by(texts: Iterable[str]) -> tuple[str, ...]:
    """Dimension names, each text one name or several separated by commas, in order (the
    Meter checks them against the metric)."""
    return tuple(name.strip() for text in texts for name in text.split(",") if name.strip())
