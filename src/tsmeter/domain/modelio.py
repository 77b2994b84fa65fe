"""Small helpers the service layer shares: building models from caller input, times, periods."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

import pydantic

from tsmeter.domain import Model, PeriodType
from tsmeter.domain.validation import parse_timestamp, to_ns
from tsmeter.errors import ValidationError

M = TypeVar("M", bound=Model)
TimeLike = datetime | str
_NAMED_PROBLEM = re.compile(
    r"^([A-Za-z_]\w*(?:\[\d+\])*(?:\.[A-Za-z_]\w*(?:\[\d+\])*)*): (.*)$", re.S
)


def build(model: type[M], data: Mapping[str, Any]) -> M:
    """Validate ``data`` into ``model``, translating pydantic's error into ours.

    >>> from tsmeter.domain import UsageThreshold
    >>> build(UsageThreshold, {"metricKey": "m", "subjectType": "org", "threshold": -1})
    Traceback (most recent call last):
    tsmeter.errors.ValidationError: threshold: must be greater than zero
    """
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        field = _path(model, err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        named = _NAMED_PROBLEM.match(message)
        if named:
            said, last = named.group(1), field.rpartition(".")[2].split("[")[0]
            if not field or said == field:
                field, message = said, named.group(2)
            elif last and (said == last or said.startswith(last + "[")):
                # a nested model's own field (``dimensions[0].name``, ``...values[2]``)
                field = field[: field.rfind(last)] + said
                message = named.group(2)
        raise ValidationError(field, message) from None


def _path(model: type[Model], loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as a field name: ``dimensions[0].name`` (top-level fields
    by their camelCase alias)."""
    field = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            field += f"[{part}]"
            continue
        name = str(part)
        if i == 0 and name in model.model_fields:
            name = model.model_fields[name].alias or name
        field += f".{name}" if field else name
    return field


def changed(current: M, changes: Mapping[str, Any]) -> dict[str, Any]:
    """``current``'s fields by attribute name, with ``changes`` (camelCase or snake_case) applied.

    One spelling throughout: the model rejects a field given under both names.
    """
    names = {field.alias or name: name for name, field in type(current).model_fields.items()}
    data = current.model_dump(by_alias=False)
    data.update({names.get(key, key): value for key, value in changes.items()})
    return data


def ns(field: str, value: TimeLike | None) -> int | None:
    """Nanoseconds since the epoch of an aware datetime or ISO-8601 text (None stays None)."""
    return None if value is None else to_ns(parse_timestamp(field, value))


def period_type(value: PeriodType | str) -> PeriodType:
    """A period type from its name in any case; ValidationError naming the choices otherwise.

    >>> period_type("daily")
    <PeriodType.DAILY: 'DAILY'>
    """
    try:
        return PeriodType(str(value).upper())
    except ValueError:
        choices = ", ".join(p.value for p in PeriodType)
        raise ValidationError("periodType", f"must be one of {choices}") from None
