"""Request bodies: read with a size limit, decoded by msgspec with JSON numbers kept exact.

A number such as ``0.1`` or ``12345678901234567.89`` is decoded as a :class:`~decimal.Decimal`
of its digits, never through a float, so a quantity arrives exactly as the caller wrote it.
Bodies are plain dicts handed to the Meter, whose intake validates them (a record batch is
never turned into a pydantic model per record). Field names follow the domain models: camelCase
or snake_case, one spelling per field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import msgspec
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request

from tsmeter.api.problems import ApiError, field_name
from tsmeter.errors import ValidationError

__all__ = ["decode", "fields_of", "plain_numbers", "read_body"]

_DECODER = msgspec.json.Decoder(float_hook=Decimal)


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, at most ``limit`` bytes: a larger one is refused with 413 as soon
    as its length is known (the header) or passed (while reading), never held whole."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "too-large", "Content too large", f"the body is larger than {limit:,} bytes"
    )


def decode(body: bytes) -> Any:
    """JSON ``body`` as Python values, numbers with a fraction or exponent as Decimal.

    >>> decode(b'{"quantity": 0.1, "n": 3}')
    {'quantity': Decimal('0.1'), 'n': 3}
    """
    if not body:
        raise ApiError(400, "malformed", "Malformed JSON", "the body is empty; send JSON")
    try:
        return _DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed", "Malformed JSON", f"the body is not JSON: {exc}") from exc


def plain_numbers(value: Any) -> Any:
    """``value`` (metadata) with the Decimals :func:`decode` made of its fractions turned into
    the floats ``json.loads`` gives, in place: metadata is described, not billed, and the
    Meter takes it as JSON values, so over HTTP it is stored as it is in process. Walked
    without recursion; levels beyond any the Meter accepts are left for it to refuse.

    >>> plain_numbers({"latency": Decimal("2.5"), "path": [Decimal("1e3"), "x"], "n": 3})
    {'latency': 2.5, 'path': [1000.0, 'x'], 'n': 3}
    """
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        node, depth = pending.pop()
        if depth > 64:
            continue
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, item in items:
            if type(item) is Decimal:
                node[key] = float(item)
            elif isinstance(item, (dict, list)):
                pending.append((item, depth + 1))
    return value


def fields_of(body: object, model: type[BaseModel], *, where: str = "") -> dict[str, Any]:
    """``body`` (a JSON object) as keyword arguments named like ``model``'s fields (snake_case),
    accepting each field's camelCase or snake_case spelling. An unknown field, a field given in
    both spellings or a body that is not an object is a ValidationError naming it.

    >>> from tsmeter.api.schemas import MetricUpdate
    >>> fields_of({"aggregationType": "MAX", "unit": "GB"}, MetricUpdate)
    {'aggregation_type': 'MAX', 'unit': 'GB'}
    """
    if not isinstance(body, Mapping):
        raise ValidationError(where, f"must be a JSON object, got {_kind(body)}")
    names: dict[str, str] = {}
    for name, info in model.model_fields.items():
        names[name] = name
        if info.alias is not None:
            names[info.alias] = name
    out: dict[str, Any] = {}
    for key, value in body.items():
        target = names.get(key)
        field = f"{where}.{key}" if where else str(key)
        if target is None:
            raise ValidationError(field, "Extra inputs are not permitted")
        if target in out:
            raise ValidationError(field, "given twice (camelCase and snake_case); give one")
        out[target] = value
    _check_types(body, model, where)
    return out


def _check_types(body: Mapping[Any, Any], model: type[BaseModel], where: str) -> None:
    """Refuse a value of the wrong JSON type (an object where a name goes) here, naming the
    field, before the Meter looks anything up with it; the values themselves are the Meter's
    to check, with its own messages."""
    try:
        model.model_validate(body)
    except PydanticValidationError as exc:
        error = exc.errors()[0]
        field = field_name([where, *error["loc"]] if where else ["body", *error["loc"]])
        raise _named_error(field, str(error["msg"])) from None


_NAMED = re.compile(r"^([A-Za-z_][\w.\[\]]*): (.*)$", re.S)


def _named_error(field: str, message: str) -> ValidationError:
    """The error of a model's own check at ``field``, where its message names a field itself
    (``values[0]: must be ...`` at ``dimensions[0].values``): that field, under ``field``.

    >>> str(_named_error("dimensions[0].values", "Value error, values[0]: must be a string"))
    'dimensions[0].values[0]: must be a string'
    >>> str(_named_error("", "Value error, dimensions[1].name: declared twice"))
    'dimensions[1].name: declared twice'
    """
    message = message.removeprefix("Value error, ")
    named = _NAMED.match(message)
    if named is None:
        return ValidationError(field, message)
    inner, problem = named.groups()
    head, dot, last = field.rpartition(".")
    base = head if dot else ""
    if not field:
        return ValidationError(inner, problem)
    if inner.split("[")[0].split(".")[0] == _bare(last):
        return ValidationError(f"{base}.{inner}" if base else _index(last) + inner, problem)
    return ValidationError(field, message)


def _bare(segment: str) -> str:
    """``values`` of ``values[0]``."""
    return segment.split("[")[0]


def _index(segment: str) -> str:
    """What precedes the name in a last segment without a dot (``[2]`` of ``[2]name``)."""
    return segment[: len(segment) - len(segment.lstrip("[]0123456789"))]


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a number" if isinstance(value, int | Decimal) else type(value).__name__
