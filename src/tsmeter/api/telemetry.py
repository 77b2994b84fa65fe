"""The server's Prometheus metrics, in a registry of its own (one per app).

* ``tsmeter_api_records_accepted_total``: records taken by the record routes;
* ``tsmeter_api_records_rejected_total{reason}``: records refused (``validation``, ``quota``,
  ``outbox_full``, ``unavailable``, ``too_large``, ``malformed``);
* ``tsmeter_api_request_duration_seconds{method,route,status}``: request latency;
* ``tsmeter_outbox_pending_records``, ``tsmeter_outbox_in_memory_records``,
  ``tsmeter_outbox_quarantined_records``, ``tsmeter_outbox_delivery_lag_seconds`` (age of
  the oldest batch waiting for the store; 0 when none waits), read from the outbox's status at
  each scrape (absent without an outbox).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tsmeter.outbox.durable import Outbox

__all__ = ["LatencyMiddleware", "Telemetry"]


class _OutboxCollector(Collector):
    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self._outbox.status()
        lag = 0.0 if status.oldest_ns is None else max(0.0, time.time() - status.oldest_ns / 1e9)
        yield GaugeMetricFamily(
            "tsmeter_outbox_pending_records",
            "Records committed to the outbox, waiting for the store",
            value=status.pending,
        )
        yield GaugeMetricFamily(
            "tsmeter_outbox_in_memory_records",
            "Records accepted, not committed to the outbox file yet",
            value=status.in_memory,
        )
        yield GaugeMetricFamily(
            "tsmeter_outbox_quarantined_records",
            "Records the store rejected, kept in the quarantine",
            value=status.quarantined,
        )
        yield GaugeMetricFamily(
            "tsmeter_outbox_delivery_lag_seconds",
            "Age of the oldest batch waiting for the store (0: none)",
            value=lag,
        )


class Telemetry:
    """The counters and histogram of one app, and its registry."""

    def __init__(self, outbox: Outbox | None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.accepted = Counter(
            "tsmeter_api_records_accepted", "Records taken by the API", registry=self.registry
        )
        self.rejected = Counter(
            "tsmeter_api_records_rejected",
            "Records refused by the API",
            ["reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tsmeter_api_request_duration_seconds",
            "Time to answer a request",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        if outbox is not None:
            self.registry.register(_OutboxCollector(outbox))

    def render(self) -> bytes:
        """The metrics in Prometheus's text format."""
        return generate_latest(self.registry)


class LatencyMiddleware:
    """Times every request into ``telemetry.latency``, labelled by its route's template (not
    the raw path, whose ids would make a series per request)."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.telemetry.latency.labels(scope["method"], template, str(status[0])).observe(
                time.perf_counter() - started
            )
