"""``/healthz``, ``/readyz`` and ``/metrics``: for orchestrators and Prometheus; they need no
key (they show no usage data, and the server binds the loopback interface by default)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from tsmeter.api.app import Service
from tsmeter.api.routes import json_response
from tsmeter.errors import TsmeterError

__all__ = ["router"]


def router(service: Service) -> APIRouter:
    """The operational routes."""
    meter = service.meter
    api = APIRouter(tags=["operations"])

    @api.get("/healthz", operation_id="ops.health")
    async def healthz() -> Response:
        """Liveness: the process answers (nothing else is contacted)."""
        return json_response({"status": "ok"})

    @api.get(
        "/readyz",
        operation_id="ops.ready",
        responses={503: {"description": "The store does not answer, or the outbox is full"}},
    )
    def readyz() -> Response:
        """Readiness: the state store and the store answer, and the outbox has room."""
        problems: list[str] = []
        try:
            meter.list_metrics()
        except TsmeterError as exc:
            problems.append(f"the state store does not answer: {exc}")
        probe = meter.capabilities.probe
        if probe is not None and not probe.reachable():
            problems.append("the store does not answer")
        if service.gate.full():
            problems.append("the outbox is full")
        body = {"status": "unready" if problems else "ready", "problems": problems}
        return json_response(body, 503 if problems else 200)

    @api.get(
        "/metrics",
        operation_id="ops.metrics",
        responses={
            200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}
        },
    )
    def metrics() -> Response:
        """Prometheus metrics: records accepted and rejected, request latency, outbox depth
        and delivery lag."""
        return Response(service.telemetry.render(), media_type=CONTENT_TYPE_LATEST)

    return api
