"""Errors as ``application/problem+json`` (RFC 9457): tsmeter's error tree mapped to HTTP in
one place, so every route answers the same kind of error the same way.

Every body has ``type``, ``title``, ``status``, ``detail`` and ``errors`` (a list of
``{field, message}``; the field names the input, e.g. ``records[3].quantity``). ``type`` is a
stable identifier (``/problems/validation``), not a page to fetch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tsmeter.errors import (
    ConflictError,
    NotFoundError,
    OutboxFullError,
    QuotaExceededError,
    StorageUnavailableError,
    TsmeterError,
    ValidationError,
)

__all__ = ["PROBLEM_JSON", "ApiError", "field_name", "install", "problem", "status_of"]

log = logging.getLogger("tsmeter.api")

PROBLEM_JSON = "application/problem+json"

_ENCODER = msgspec.json.Encoder()


class ApiError(Exception):
    """An HTTP-level error the API raises itself (a malformed body, a body too large)."""

    def __init__(
        self, status: int, slug: str, title: str, detail: str, field: str | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.field = field


#: (error class, status, type slug, title), most specific first
_TREE: list[tuple[type[TsmeterError], int, str, str]] = [
    (ValidationError, 422, "validation", "Invalid input"),
    (NotFoundError, 404, "not-found", "Not found"),
    (ConflictError, 409, "conflict", "Conflict"),
    (QuotaExceededError, 403, "quota-exceeded", "Quota exceeded"),
    (OutboxFullError, 429, "outbox-full", "Too many records waiting"),
    (StorageUnavailableError, 503, "storage-unavailable", "Storage unavailable"),
    (TsmeterError, 500, "internal", "Internal error"),
]


def status_of(exc: TsmeterError) -> tuple[int, str, str]:
    """The HTTP status, type slug and title for one of tsmeter's errors.

    >>> status_of(QuotaExceededError("over", None))
    (403, 'quota-exceeded', 'Quota exceeded')
    """
    for kind, status, slug, title in _TREE:
        if isinstance(exc, kind):
            return status, slug, title
    raise AssertionError("TsmeterError is the last entry")  # pragma: no cover


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    errors: Sequence[dict[str, str]] = (),
    headers: dict[str, str] | None = None,
) -> Response:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": f"/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
        "errors": list(errors),
    }
    return Response(_ENCODER.encode(body), status, headers=headers, media_type=PROBLEM_JSON)


def install(app: FastAPI, *, retry_after: int, unavailable_retry_after: int) -> None:
    """Register the handlers that turn every error into problem+json on ``app``."""

    async def tsmeter_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TsmeterError)
        status, slug, title = status_of(exc)
        headers: dict[str, str] | None = None
        errors: list[dict[str, str]] = []
        detail = str(exc)
        if isinstance(exc, ValidationError):
            errors = [{"field": exc.field, "message": exc.problem}]
        elif isinstance(exc, OutboxFullError):
            headers = {"Retry-After": str(retry_after)}
        elif isinstance(exc, StorageUnavailableError):
            headers = {"Retry-After": str(unavailable_retry_after)}
        elif status == 500:
            log.error("request failed: %s", detail, exc_info=exc)
            detail = "the server failed to answer this request; it is logged"
        return problem(status, slug, title, detail, errors, headers)

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        errors = [] if exc.field is None else [{"field": exc.field, "message": exc.detail}]
        return problem(exc.status, exc.slug, exc.title, exc.detail, errors)

    async def request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"field": field_name(error.get("loc", ())), "message": str(error.get("msg", ""))}
            for error in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "validation", "Invalid input", detail, errors)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        slug = {
            404: "not-found",
            405: "method-not-allowed",
            401: "unauthorized",
            403: "forbidden",
        }.get(exc.status_code, "http")
        title = _TITLES.get(exc.status_code, "Error")
        headers = dict(exc.headers) if exc.headers else None
        return problem(exc.status_code, slug, title, str(exc.detail), (), headers)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("request failed", exc_info=exc)
        return problem(
            500,
            "internal",
            "Internal error",
            "the server failed to answer this request; it is logged",
        )

    app.add_exception_handler(TsmeterError, tsmeter_error)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Content too large",
    429: "Too many requests",
}


def field_name(loc: Sequence[object]) -> str:
    """A FastAPI error location as the field it names: ``("query", "limit")`` -> ``limit``.

    >>> field_name(("query", "limit")), field_name(("body", "records", 3, "quantity"))
    ('limit', 'records[3].quantity')
    """
    parts = list(loc[1:] if loc and loc[0] in ("query", "path", "body", "header") else loc)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
