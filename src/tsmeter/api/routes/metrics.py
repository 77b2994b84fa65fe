"""``/v1/metrics``: define, list, read, change and delete metric definitions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from tsmeter.api.app import Service, errors, request_body
from tsmeter.api.bodies import decode, fields_of, read_body
from tsmeter.api.routes import json_response, scope
from tsmeter.api.schemas import NAME_QUERY, Deleted, MetricCreate, MetricList, MetricUpdate
from tsmeter.domain import MetricDefinition
from tsmeter.errors import ValidationError

__all__ = ["router"]

OrgId = Annotated[
    str | None, Query(alias="orgId", description="the org's own metric", **NAME_QUERY)
]


def router(service: Service) -> APIRouter:
    """The metric routes over ``service.meter``."""
    meter = service.meter
    limit = service.settings.max_json_bytes
    api = APIRouter(prefix="/v1/metrics", tags=["metrics"])

    @api.post(
        "",
        operation_id="metric.define",
        status_code=201,
        response_model=MetricDefinition,
        dependencies=scope(service, "admin"),
        openapi_extra=request_body(MetricCreate),
        responses=errors(400, 401, 403, 409, 413, 422),
    )
    async def define_metric(request: Request) -> Response:
        """Define a metric (409 if its key exists in that org scope)."""
        fields = fields_of(decode(await read_body(request, limit)), MetricCreate)
        if "key" not in fields:
            raise ValidationError("key", "Field required")
        key = fields.pop("key")
        metric = await run_in_threadpool(lambda: meter.define_metric(key, **fields))
        return json_response(metric, 201)

    @api.get(
        "",
        operation_id="metric.list",
        response_model=MetricList,
        dependencies=scope(service, "read"),
        responses=errors(401, 403, 422),
    )
    def list_metrics(
        org_id: OrgId = None,
        all_orgs: Annotated[bool, Query(alias="allOrgs")] = False,
    ) -> Response:
        """Metrics of one scope (global by default), or of every scope with ``allOrgs``."""
        return json_response({"metrics": meter.list_metrics(org_id, all_orgs=all_orgs)})

    @api.get(
        "/{key:path}",
        operation_id="metric.get",
        response_model=MetricDefinition,
        dependencies=scope(service, "read"),
        responses=errors(401, 403, 404),
    )
    def get_metric(key: str, org_id: OrgId = None) -> Response:
        """One metric definition."""
        return json_response(meter.get_metric(key, org_id))

    @api.patch(
        "/{key:path}",
        operation_id="metric.update",
        response_model=MetricDefinition,
        dependencies=scope(service, "admin"),
        openapi_extra=request_body(MetricUpdate),
        responses=errors(400, 401, 403, 404, 413, 422),
    )
    async def update_metric(key: str, request: Request, org_id: OrgId = None) -> Response:
        """Change a metric's name, description, unit, aggregation type or reset period. Its
        dimension names, unique property and time unit are fixed: sending other values is a
        422 naming the field."""
        changes = fields_of(decode(await read_body(request, limit)), MetricUpdate)
        metric = await run_in_threadpool(lambda: meter.update_metric(key, org_id, **changes))
        return json_response(metric)

    @api.delete(
        "/{key:path}",
        operation_id="metric.delete",
        response_model=Deleted,
        dependencies=scope(service, "admin"),
        responses=errors(401, 403, 404),
    )
    def delete_metric(
        key: str,
        org_id: OrgId = None,
        purge: Annotated[bool, Query(description="delete its records and summaries too")] = False,
    ) -> Response:
        """Delete a metric; with ``purge`` its records and summaries go too."""
        return json_response({"deletedRecords": meter.delete_metric(key, org_id, purge=purge)})

    return api
