"""A tiny FastAPI app guarded by :class:`tsmeter.api.auth.Authenticator`, for the auth tests
(run by uvicorn in its own process, or in-process by TestClient): one route per scope, one
without a key. ``$AUTH_TEST_STORE`` names the store whose keys it checks (opened with
:func:`tsmeter.connect`, as ``tsmeter serve`` opens it); ``$AUTH_TEST_CACHE`` sets how long
checked keys are cached (s); ``$AUTH_TEST_OFF=1`` turns authentication off."""

# no "from __future__ import annotations": FastAPI reads the local Annotated aliases

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI

import tsmeter
from tsmeter.access import ApiKey, ApiKeys
from tsmeter.api.auth import Authenticator


def build(keys: ApiKeys | None) -> FastAPI:
    """The app over ``keys`` (None: authentication off)."""
    auth = Authenticator(keys)
    app = FastAPI()
    auth.install(app)
    Ingest = Annotated[ApiKey | None, Depends(auth.require("ingest"))]
    Read = Annotated[ApiKey | None, Depends(auth.require("read"))]
    Admin = Annotated[ApiKey | None, Depends(auth.require("admin"))]

    def who(key: ApiKey | None) -> dict[str, Any]:
        return {"key": None if key is None else key.id}

    @app.post("/ingest")
    async def ingest(key: Ingest) -> dict[str, Any]:
        return who(key)

    @app.get("/read")
    async def read(key: Read) -> dict[str, Any]:
        return who(key)

    @app.get("/admin")
    def admin(key: Admin) -> dict[str, Any]:
        return who(key)

    @app.get("/open")
    async def open_() -> dict[str, Any]:
        return {"ok": True}

    return app


def create() -> FastAPI:
    """The uvicorn factory (``uvicorn --factory tests.auth_app:create``)."""
    meter = tsmeter.connect(os.environ["AUTH_TEST_STORE"], create=False, mirror=False)
    keys = meter.api_keys
    assert keys is not None
    keys.cache_seconds = float(os.environ.get("AUTH_TEST_CACHE", "5"))
    return build(None if os.environ.get("AUTH_TEST_OFF") == "1" else keys)
