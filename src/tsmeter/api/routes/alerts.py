"""``/v1/alerts``: list alerts, acknowledge and resolve them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from tsmeter.api.app import Service, errors
from tsmeter.api.routes import json_response, scope
from tsmeter.api.schemas import NAME_QUERY, AlertList
from tsmeter.domain import AlertStatus, UsageAlert

__all__ = ["router"]


def router(service: Service) -> APIRouter:
    """The alert routes over ``service.meter``."""
    meter = service.meter
    api = APIRouter(prefix="/v1/alerts", tags=["alerts"])

    @api.get(
        "",
        operation_id="alert.list",
        response_model=AlertList,
        dependencies=scope(service, "read"),
        responses=errors(401, 403, 422),
    )
    def list_alerts(
        status: AlertStatus | None = None,
        metric_key: Annotated[str | None, Query(alias="metricKey", **NAME_QUERY)] = None,
        subject_type: Annotated[str | None, Query(alias="subjectType", **NAME_QUERY)] = None,
        subject_id: Annotated[str | None, Query(alias="subjectId", **NAME_QUERY)] = None,
    ) -> Response:
        """Alerts, newest first, optionally filtered."""
        found = meter.list_alerts(
            status, metric_key=metric_key, subject_type=subject_type, subject_id=subject_id
        )
        return json_response({"alerts": found})

    @api.post(
        "/{alert_id}/acknowledge",
        operation_id="alert.acknowledge",
        response_model=UsageAlert,
        dependencies=scope(service, "admin"),
        responses=errors(401, 403, 404),
    )
    def acknowledge(alert_id: str) -> Response:
        """Mark an alert as seen (it stays open)."""
        return json_response(meter.acknowledge_alert(alert_id))

    @api.post(
        "/{alert_id}/resolve",
        operation_id="alert.resolve",
        response_model=UsageAlert,
        dependencies=scope(service, "admin"),
        responses=errors(401, 403, 404),
    )
    def resolve(alert_id: str) -> Response:
        """Close an alert by hand: its level does not fire again in its window."""
        return json_response(meter.resolve_alert(alert_id))

    return api
