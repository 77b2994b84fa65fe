"""API-key authentication for the HTTP API: a FastAPI dependency per scope.

``Authorization: Bearer <key>`` carries a key made by ``tsmeter apikey create`` (see
:mod:`tsmeter.access` and ``docs/access.md``). A request without a key, or with a malformed,
unknown or revoked one, gets 401 with ``WWW-Authenticate: Bearer``; a valid key without the
route's scope gets 403 (``admin`` implies every scope). Bodies are problem+json (``type``,
``title``, ``status``, ``detail``, ``errors``); no answer, and nothing logged, repeats the key.

A key answered from :class:`~tsmeter.access.ApiKeys`'s cache costs no I/O, so it is checked
on the event loop; one that is not is looked up in the threadpool, since the state store's
read blocks. ``Authenticator(None)`` turns authentication off (``tsmeter serve --no-auth``);
the dependencies then still declare the bearer scheme, so the OpenAPI document is the same
either way. Example::

    auth = Authenticator(meter.api_keys)
    auth.install(app)  # problem+json for its errors where the app has no handler of its own
    @app.post("/v1/usage/records", dependencies=[Depends(auth.require("ingest"))])
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from tsmeter.access import ApiKey, ApiKeys, Scope

__all__ = ["AuthError", "Authenticator"]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key from `tsmeter apikey create` (scopes: ingest, read, admin).",
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
#: the bearer credentials of a request, None when it sent none (or another scheme)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]


class AuthError(HTTPException):
    """A refused request: 401 (no valid key) or 403 (the key lacks the scope). An
    HTTPException, so an app's handler for those renders it; :meth:`Authenticator.install`
    renders it as problem+json where there is none."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status, detail, headers=_CHALLENGE if status == 401 else None)
        self.slug, self.title = (
            ("unauthorized", "Unauthorized") if status == 401 else ("forbidden", "Forbidden")
        )


Dependency = Callable[..., Awaitable[ApiKey | None]]


class Authenticator:
    """Checks API keys against ``keys`` (None: every request is let through)."""

    def __init__(self, keys: ApiKeys | None) -> None:
        self.keys = keys

    @property
    def enabled(self) -> bool:
        """Whether requests need a key."""
        return self.keys is not None

    def require(self, scope: Scope | str) -> Dependency:
        """A FastAPI dependency admitting requests whose key grants ``scope``; it gives the
        key (None with authentication off)."""
        needed = Scope(scope)
        keys = self.keys
        if keys is None:

            async def open_door(credentials: Credentials) -> ApiKey | None:
                return None

            return open_door

        async def check(credentials: Credentials) -> ApiKey | None:
            if credentials is None or not credentials.credentials:
                raise AuthError(401, "an API key is required: send Authorization: Bearer <key>")
            token = credentials.credentials
            known, key = keys.cached(token)
            if not known:
                key = await run_in_threadpool(keys.authenticate, token)
            if key is None:
                raise AuthError(401, "the API key is not valid (unknown, revoked or malformed)")
            if not key.allows(needed):
                raise AuthError(403, f"API key {key.id} does not have the {needed.value!r} scope")
            return key

        return check

    @staticmethod
    def install(app: FastAPI) -> None:
        """Render :class:`AuthError` as problem+json on ``app`` (an app with its own
        problem+json handler for HTTPException needs no call)."""

        async def handle(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, AuthError)
            body: dict[str, Any] = {"type": f"/problems/{exc.slug}", "title": exc.title,
                                    "status": exc.status_code, "detail": exc.detail,
                                    "errors": []}  # fmt: skip
            return Response(json.dumps(body), exc.status_code, headers=exc.headers,
                            media_type="application/problem+json")  # fmt: skip

        app.add_exception_handler(AuthError, handle)
