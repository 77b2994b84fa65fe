"""The HTTP API as an ASGI application: :func:`create_app` over one Meter.

Routes live in :mod:`tsmeter.api.routes` (one module per resource); errors become
problem+json in :mod:`tsmeter.api.problems`. Blocking Meter calls run in the threadpool
(``def`` routes, or ``run_in_threadpool``), so the event loop only reads and writes sockets.
``tsmeter serve`` runs it on uvicorn; in Python::

    app = create_app(meter, authenticator=Authenticator(None), settings=ApiSettings())
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from tsmeter import __version__
from tsmeter.api import problems, schemas
from tsmeter.api.telemetry import LatencyMiddleware, Telemetry
from tsmeter.errors import OutboxFullError
from tsmeter.metering.meter import Meter

__all__ = ["ApiSettings", "Guard", "OutboxGate", "Service", "create_app"]


class Guard(Protocol):
    """What the app needs of an authenticator (:class:`tsmeter.api.auth.Authenticator`): a
    FastAPI dependency per scope (``ingest``, ``read``, ``admin``)."""

    def require(self, scope: str) -> Callable[..., Any]: ...


@dataclass(frozen=True)
class ApiSettings:
    """Limits and hints of the API.

    ``max_batch_records`` and ``max_body_bytes`` bound a batch (413 beyond);
    ``retry_after`` is the Retry-After (s) of a 429 when the outbox is full,
    ``unavailable_retry_after`` that of a 503 when the store cannot be reached.
    """

    max_batch_records: int = 10_000
    max_body_bytes: int = 16 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024  # any other body (one record, a metric, a threshold)
    retry_after: int = 1
    unavailable_retry_after: int = 5


class OutboxGate:
    """Whether the outbox has room, from its status read at most every ``every`` seconds, so
    a full outbox answers 429 at once instead of making each caller wait for the outbox's
    own timeout."""

    def __init__(self, meter: Meter, every: float = 0.25) -> None:
        self._outbox = meter.outbox
        self._every = every
        self._lock = threading.Lock()
        self._checked = 0.0
        self._held = 0

    def held(self) -> int:
        """Records in the outbox (committed and in memory), as last read."""
        if self._outbox is None:
            return 0
        now = time.monotonic()
        with self._lock:
            if now - self._checked >= self._every:
                status = self._outbox.status()
                self._held = status.pending + status.in_memory
                self._checked = now
            return self._held

    def full(self, adding: int = 1) -> bool:
        """Whether ``adding`` more records would pass the outbox's ``max_pending``."""
        if self._outbox is None:
            return False
        return self.held() > 0 and self.held() + adding > self._outbox.max_pending

    def check(self, adding: int) -> None:
        """Raise OutboxFullError when :meth:`full`."""
        if self.full(adding):
            assert self._outbox is not None
            raise OutboxFullError(
                f"the outbox holds {self.held():,} records (max_pending"
                f" {self._outbox.max_pending:,}); {adding:,} records were not queued: retry"
                " with the same ids"
            )


@dataclass(frozen=True)
class Service:
    """What every route module is built from."""

    meter: Meter
    guard: Guard
    settings: ApiSettings
    telemetry: Telemetry
    gate: OutboxGate


#: request bodies the routes read themselves, and the problem body, shown in the OpenAPI
#: document
DOCUMENTED_MODELS = (
    schemas.Problem,
    schemas.MetricCreate,
    schemas.MetricUpdate,
    schemas.RecordIn,
    schemas.RecordBatch,
    schemas.ThresholdCreate,
    schemas.ThresholdUpdate,
    schemas.CorrectionIn,
    schemas.AmendIn,
)


def create_app(meter: Meter, *, authenticator: Guard, settings: ApiSettings) -> FastAPI:
    """The FastAPI application serving ``meter`` (see the module docstring and
    ``docs/api.md``)."""
    from tsmeter.api.routes import alerts, corrections, metrics, ops, thresholds, usage

    telemetry = Telemetry(meter.outbox)
    service = Service(meter, authenticator, settings, telemetry, OutboxGate(meter))
    app = FastAPI(
        title="tsmeter",
        version=__version__,
        summary="Usage metering: record and query usage over HTTP.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/v1/openapi.json",
    )
    problems.install(
        app,
        retry_after=settings.retry_after,
        unavailable_retry_after=settings.unavailable_retry_after,
    )
    for module in (metrics, usage, corrections, thresholds, alerts, ops):
        app.include_router(module.router(service))
    app.add_middleware(LatencyMiddleware, telemetry=telemetry)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            _, defs = models_json_schema(
                [(model, "validation") for model in DOCUMENTED_MODELS],
                ref_template="#/components/schemas/{model}",
            )
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in defs.get("$defs", {}).items():
                components.setdefault(name, schema)
            _problems_only(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def request_body(model: type[Any], media_type: str = "application/json") -> dict[str, Any]:
    """The ``openapi_extra`` of a route that reads ``model`` from its body itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {media_type: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


_PROBLEM_CONTENT = {problems.PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _problems_only(document: dict[str, Any]) -> None:
    """Every error response of ``document`` as problem+json: FastAPI's own 422 schema
    (HTTPValidationError) is replaced, since :mod:`tsmeter.api.problems` answers instead."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if str(status).startswith(("4", "5")):
                    response["content"] = _PROBLEM_CONTENT
                    if status == "422":
                        response["description"] = _DESCRIPTIONS[422]
    schemas_ = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas_.pop(name, None)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: problem+json bodies for ``statuses``."""
    return {status: {"description": _DESCRIPTIONS[status]} for status in statuses}


_DESCRIPTIONS = {
    400: "Malformed JSON",
    401: "No key, or a key that is not valid",
    403: "The key lacks the scope (or, with enforce=true, a BLOCK threshold is reached)",
    404: "Not found",
    409: "Conflict with what is stored",
    413: "Body larger than the limit",
    422: "Invalid input; errors name the field",
    429: "The outbox is full: retry after Retry-After seconds with the same ids",
    503: "The store cannot be reached: retry after Retry-After seconds",
}
