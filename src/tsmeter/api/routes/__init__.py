"""The API's routes, one module per resource; each has ``router(service) -> APIRouter``."""

from __future__ import annotations

from typing import Any

import pydantic_core
from fastapi import Depends
from fastapi.params import Depends as DependsParam
from fastapi.responses import Response

from tsmeter.api.app import Service

__all__ = ["json_response", "scope"]


def json_response(value: Any, status: int = 200) -> Response:
    """``value`` (models, or dicts and lists of them) as camelCase JSON, decimals as strings."""
    body = pydantic_core.to_json(value, by_alias=True)
    return Response(body, status, media_type="application/json")


def scope(service: Service, name: str) -> list[DependsParam]:
    """The ``dependencies=`` of a route that needs the key scope ``name``."""
    return [Depends(service.guard.require(name))]
