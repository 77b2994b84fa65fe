"""The auth dependency in-process (FastAPI's TestClient): the OpenAPI document declares the
bearer scheme whether authentication is on or off, and a bad scope name is refused early."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import tsmeter
from tests.auth_app import build
from tsmeter.api.auth import Authenticator


def test_the_openapi_document_is_the_same_with_authentication_off(tmp_path: Path) -> None:
    with tsmeter.connect(f"sqlite:///{tmp_path / 'u.db'}", mirror=False) as meter:
        on = TestClient(build(meter.api_keys)).get("/openapi.json").json()
        off = TestClient(build(None)).get("/openapi.json").json()
    assert on == off
    assert on["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `tsmeter apikey create` (scopes: ingest, read, admin).",
    }
    assert on["paths"]["/read"]["get"]["security"] == [{"apiKey": []}]


def test_an_unknown_scope_is_refused_when_the_route_is_built() -> None:
    with pytest.raises(ValueError, match="'write'"):
        Authenticator(None).require("write")


def test_in_process_a_missing_key_is_401_problem_json(tmp_path: Path) -> None:
    with tsmeter.connect(f"sqlite:///{tmp_path / 'u.db'}", mirror=False) as meter:
        assert meter.api_keys is not None
        client = TestClient(build(meter.api_keys))
        response = client.get("/read")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == "application/problem+json"
        issued = meter.api_keys.create("svc", ["read"])
        response = client.get("/read", headers={"Authorization": f"bearer {issued.key}"})
        assert response.json() == {"key": issued.api_key.id}  # the scheme is case-blind
