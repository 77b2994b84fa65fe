"""The clients are the Meter over HTTP: the same method names with the same parameters
(names, kinds, defaults, types) and return types, so code moves between them unchanged."""

from __future__ import annotations

import inspect
import typing

import pytest

from tsmeter.client import AsyncClient, Client
from tsmeter.metering.meter import Meter

METHODS = [
    "define_metric",
    "update_metric",
    "delete_metric",
    "get_metric",
    "list_metrics",
    "record",
    "record_batch",
    "get_usage",
    "get_usage_summary",
    "get_usage_summaries",
    "get_usage_breakdown",
    "cancel_record",
    "amend_record",
    "list_corrections",
    "export_usage",
    "create_threshold",
    "get_threshold",
    "update_threshold",
    "delete_threshold",
    "list_thresholds",
    "list_alerts",
    "acknowledge_alert",
    "resolve_alert",
]
#: what the server does for the caller: CSV cells are neutralised there, and there is no
#: progress callback over HTTP
NOT_OVER_HTTP = {"export_usage": {"neutralise", "progress"}}


def _parameters(function: object, skip: set[str]) -> list[tuple[str, object, object]]:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return [
        (p.name, p.kind, p.default) for p in signature.parameters.values() if p.name not in skip
    ]


@pytest.mark.parametrize("client", [Client, AsyncClient], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", METHODS)
def test_same_parameters_and_return_type(client: type, name: str) -> None:
    meter_method, client_method = getattr(Meter, name), getattr(client, name)
    assert _parameters(client_method, set()) == _parameters(
        meter_method, NOT_OVER_HTTP.get(name, set())
    )
    hints, wanted = typing.get_type_hints(client_method), typing.get_type_hints(meter_method)
    assert {k: v for k, v in wanted.items() if k not in NOT_OVER_HTTP.get(name, set())} == hints
    assert inspect.iscoroutinefunction(client_method) == (client is AsyncClient)
