"""``/v1/thresholds``: create, list, read, change and delete limits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from tsmeter.api.app import Service, errors, request_body
from tsmeter.api.bodies import decode, fields_of, read_body
from tsmeter.api.routes import json_response, scope
from tsmeter.api.schemas import NAME_QUERY, ThresholdCreate, ThresholdList, ThresholdUpdate
from tsmeter.domain import UsageThreshold
from tsmeter.errors import ValidationError

__all__ = ["router"]


def router(service: Service) -> APIRouter:
    """The threshold routes over ``service.meter``."""
    meter = service.meter
    limit = service.settings.max_json_bytes
    api = APIRouter(prefix="/v1/thresholds", tags=["thresholds"])

    @api.post(
        "",
        operation_id="threshold.create",
        status_code=201,
        response_model=UsageThreshold,
        dependencies=scope(service, "admin"),
        openapi_extra=request_body(ThresholdCreate),
        responses=errors(400, 401, 403, 404, 409, 413, 422),
    )
    async def create_threshold(request: Request) -> Response:
        """Create a limit for one subject, or ``*``: every subject of the type."""
        fields = fields_of(decode(await read_body(request, limit)), ThresholdCreate)
        for name, camel in (
            ("metric_key", "metricKey"),
            ("subject_type", "subjectType"),
            ("threshold", "threshold"),
        ):
            if name not in fields:
                raise ValidationError(camel, "Field required")
        metric_key = fields.pop("metric_key")
        subject_type = fields.pop("subject_type")
        value = fields.pop("threshold")
        created = await run_in_threadpool(
            lambda: meter.create_threshold(metric_key, subject_type, value, **fields)
        )
        return json_response(created, 201)

    @api.get(
        "",
        operation_id="threshold.list",
        response_model=ThresholdList,
        dependencies=scope(service, "read"),
        responses=errors(401, 403, 422),
    )
    def list_thresholds(
        metric_key: Annotated[str | None, Query(alias="metricKey", **NAME_QUERY)] = None,
        subject_type: Annotated[str | None, Query(alias="subjectType", **NAME_QUERY)] = None,
        subject_id: Annotated[str | None, Query(alias="subjectId", **NAME_QUERY)] = None,
    ) -> Response:
        """Thresholds, optionally of one metric, subject type or subject."""
        found = meter.list_thresholds(metric_key, subject_type, subject_id)
        return json_response({"thresholds": found})

    @api.get(
        "/{threshold_id}",
        operation_id="threshold.get",
        response_model=UsageThreshold,
        dependencies=scope(service, "read"),
        responses=errors(401, 403, 404),
    )
    def get_threshold(threshold_id: str) -> Response:
        """One threshold."""
        return json_response(meter.get_threshold(threshold_id))

    @api.patch(
        "/{threshold_id}",
        operation_id="threshold.update",
        response_model=UsageThreshold,
        dependencies=scope(service, "admin"),
        openapi_extra=request_body(ThresholdUpdate),
        responses=errors(400, 401, 403, 404, 413, 422),
    )
    async def update_threshold(threshold_id: str, request: Request) -> Response:
        """Change a threshold's limit, warn level, period, action or notification targets."""
        changes = fields_of(decode(await read_body(request, limit)), ThresholdUpdate)
        updated = await run_in_threadpool(lambda: meter.update_threshold(threshold_id, **changes))
        return json_response(updated)

    @api.delete(
        "/{threshold_id}",
        operation_id="threshold.delete",
        status_code=204,
        dependencies=scope(service, "admin"),
        responses=errors(401, 403, 404),
    )
    def delete_threshold(threshold_id: str) -> Response:
        """Delete a threshold."""
        meter.delete_threshold(threshold_id)
        return Response(status_code=204)

    return api
