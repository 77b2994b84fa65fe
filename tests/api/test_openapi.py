"""The committed OpenAPI document is the generator's output, and names the contract's
operations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.api.server import ROOT
from tools.openapi import render

DOCUMENT = ROOT / "docs" / "api" / "openapi.json"

CONTRACT = {
    "metric.define", "metric.list", "metric.get", "metric.update", "metric.delete",
    "usage.record", "usage.recordBatch", "usage.get", "usage.getSummary", "usage.export",
    "threshold.create", "threshold.list", "threshold.update", "threshold.delete",
    "usage.getBreakdown", "usage.cancelRecord", "usage.amendRecord", "usage.listCorrections",
}  # fmt: skip


def test_the_committed_document_is_the_generators_output() -> None:
    """docs/api/openapi.json matches the app: run
    `.venv/bin/python -m tools.openapi docs/api/openapi.json` when this fails."""
    assert DOCUMENT.read_text(encoding="utf-8") == render()


def test_the_tool_writes_the_document(tmp_path: Path) -> None:
    """``python -m tools.openapi PATH`` writes what :func:`render` gives."""
    out = tmp_path / "openapi.json"
    subprocess.run([sys.executable, "-m", "tools.openapi", str(out)], cwd=ROOT, check=True)
    assert out.read_text(encoding="utf-8") == render()


def test_every_operation_of_the_contract_is_there_and_errors_are_problems() -> None:
    """Each contract operation has its operationId under /v1; every error response is
    problem+json."""
    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    found = {
        op["operationId"]: path for path, ops in document["paths"].items() for op in ops.values()
    }
    assert set(found) >= CONTRACT
    assert all(found[name].startswith("/v1/") for name in CONTRACT)
    for ops in document["paths"].values():
        for op in ops.values():
            for status, response in op["responses"].items():
                if status[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"]


def test_the_server_serves_the_same_document_without_a_key(tmp_path: Path) -> None:
    """A running server (keys required) answers /v1/openapi.json without a key, and it is the
    committed document."""
    from tests.api.server import Served

    with Served(f"sqlite:///{tmp_path / 'usage.db'}", tmp_path, create=True, args=()) as server:
        answer = server.get("/v1/openapi.json")
    assert answer.status_code == 200
    assert answer.json() == json.loads(DOCUMENT.read_text(encoding="utf-8"))
