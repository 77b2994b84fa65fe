"""Every request the clients make is an operation of the server's committed OpenAPI document
(docs/api/openapi.json, itself checked against the app): the method and path exist and each
query parameter sent is one the operation declares; and every /v1 operation has a client
method. A renamed route or parameter fails here, not in a user's service."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.client.live import ROOT
from tsmeter.client._protocol import Call, Calls, record_body

DOCUMENT = json.loads((ROOT / "docs" / "api" / "openapi.json").read_text("utf-8"))
S, E = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"
RECORD = record_body("m", "t", "s", "1", org_id="o")

#: one call per client method, every optional argument given
CALLS: dict[str, Call[Any]] = {
    "define_metric": Calls.define_metric("k/1", exist_ok=False, fields={"unit": "u"}),
    "update_metric": Calls.update_metric("k/1", "o", {"unit": "u"}),
    "delete_metric": Calls.delete_metric("k/1", "o", True),
    "get_metric": Calls.get_metric("k/1", "o"),
    "list_metrics": Calls.list_metrics("o", True),
    "record": Calls.record(RECORD, True),
    "record_batch": Calls.record_batch([RECORD], True),
    "get_usage": Calls.get_usage("m", "t", "s", S, E, "o", 10),
    "get_usage_summary": Calls.get_usage_summary("m", "t", "s", "DAILY", S, "o"),
    "get_usage_summaries": Calls.get_usage_summaries("m", "DAILY", S, E, "t", "s", "o"),
    "export_usage": Calls.export_usage("m", "csv", S, E, "t", "s", "o"),
    "get_usage_breakdown": Calls.get_usage_breakdown(
        "m", "DAILY", S, E, ["a", "b"], {"a": "x", "b": None}, "t", "s", "o", E
    ),
    "cancel_record": Calls.cancel_record("r/1", "why", "who", "c-1"),
    "amend_record": Calls.amend_record("r/1", "2.5", "why", "who", "c-1"),
    "list_corrections": Calls.list_corrections("m", "o", "r/1", S, E),
    "create_threshold": Calls.create_threshold("m", "t", 1, "s", {"action": "BLOCK"}),
    "get_threshold": Calls.get_threshold("id"),
    "update_threshold": Calls.update_threshold("id", {"threshold": "2"}),
    "delete_threshold": Calls.delete_threshold("id"),
    "list_thresholds": Calls.list_thresholds("m", "t", "s"),
    "list_alerts": Calls.list_alerts("PENDING", "m", "t", "s"),
    "acknowledge_alert": Calls.acknowledge_alert("id"),
    "resolve_alert": Calls.resolve_alert("id"),
}


def _operation(call: Call[Any]) -> tuple[str, dict[str, Any]] | None:
    """The document's (path template, operation) that ``call`` is a request of."""
    for template, operations in DOCUMENT["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, call.path) and call.method.lower() in operations:
            return template, operations[call.method.lower()]
    return None


@pytest.mark.parametrize("name", sorted(CALLS))
def test_each_call_is_a_documented_operation(name: str) -> None:
    call = CALLS[name]
    found = _operation(call)
    assert found is not None, f"{call.method} {call.path} is not in docs/api/openapi.json"
    declared = {p["name"] for p in found[1].get("parameters", []) if p["in"] == "query"}
    assert set(call.params) <= declared, f"{name} sends {set(call.params) - declared}"


def test_every_v1_operation_has_a_client_method() -> None:
    used = {(c.method.lower(), found[0]) for c in CALLS.values() if (found := _operation(c))}
    offered = {
        (method, path)
        for path, operations in DOCUMENT["paths"].items()
        if path.startswith("/v1/")
        for method in operations
    }
    assert offered - used == set()
