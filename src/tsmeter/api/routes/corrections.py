"""Corrections of stored records: cancel one, amend its quantity, list the audit trail.

``POST /v1/usage/records/{recordId}/cancel`` and ``.../amend`` change billed usage, so they
need the ``admin`` scope; ``GET /v1/usage/corrections`` reads the trail with ``read``. A
record id is data (any name, ``/`` included): clients send it percent-encoded. Each call is
idempotent by its correction id (default: derived from what it does), so a retry answers
the same correction with ``applied: false``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from tsmeter.access import ApiKey
from tsmeter.api.app import Service, errors, request_body
from tsmeter.api.bodies import decode, fields_of, read_body
from tsmeter.api.routes import json_response, scope
from tsmeter.api.schemas import NAME_QUERY, TIME_RULE, AmendIn, CorrectionIn, CorrectionList
from tsmeter.domain.corrections import Correction
from tsmeter.errors import ValidationError

__all__ = ["router"]

log = logging.getLogger("tsmeter.api")

OrgId = Annotated[str | None, Query(alias="orgId", **NAME_QUERY)]


def router(service: Service) -> APIRouter:
    """The correction routes over ``service.meter``."""
    meter = service.meter
    limit = service.settings.max_json_bytes
    admin = Depends(service.guard.require("admin"))
    api = APIRouter(prefix="/v1/usage", tags=["corrections"])

    def audited(correction: Correction, key: ApiKey | None) -> Response:
        if correction.applied:
            log.info(
                "correction %s (%s of record %r) by %r with key %s",
                correction.id,
                correction.kind.value,
                correction.record_id,
                correction.actor,
                key.id if key is not None else "-",
            )
        return json_response(correction)

    @api.post(
        "/records/{record_id:path}/cancel",
        operation_id="usage.cancelRecord",
        response_model=Correction,
        openapi_extra=request_body(CorrectionIn),
        responses=errors(400, 401, 403, 404, 413, 422, 503),
    )
    async def cancel(record_id: str, request: Request, key: ApiKey | None = admin) -> Response:
        """Cancel a stored record: it no longer counts in any summary, its id stays known
        (recording it again counts nothing). Accepted up to the correction window after the
        record's time (422 naming ``recordId`` beyond). ``applied`` is false when this
        correction was made before and nothing changed."""
        fields = _required(
            fields_of(decode(await read_body(request, limit)), CorrectionIn), ("reason", "actor")
        )
        correction = await run_in_threadpool(
            lambda: meter.cancel_record(
                record_id,
                reason=fields["reason"],
                actor=fields["actor"],
                correction_id=fields.get("correction_id"),
            )
        )
        return audited(correction, key)

    @api.post(
        "/records/{record_id:path}/amend",
        operation_id="usage.amendRecord",
        response_model=Correction,
        openapi_extra=request_body(AmendIn),
        responses=errors(400, 401, 403, 404, 409, 413, 422, 503),
    )
    async def amend(record_id: str, request: Request, key: ApiKey | None = admin) -> Response:
        """Replace a stored record's quantity (its subject, time and properties stay: a
        record in the wrong subject or time is cancelled and recorded anew). 409 for a
        cancelled record; the window and ``applied`` as for a cancel."""
        fields = _required(
            fields_of(decode(await read_body(request, limit)), AmendIn),
            ("quantity", "reason", "actor"),
        )
        correction = await run_in_threadpool(
            lambda: meter.amend_record(
                record_id,
                fields["quantity"],
                reason=fields["reason"],
                actor=fields["actor"],
                correction_id=fields.get("correction_id"),
            )
        )
        return audited(correction, key)

    @api.get(
        "/corrections",
        operation_id="usage.listCorrections",
        response_model=CorrectionList,
        dependencies=scope(service, "read"),
        responses=errors(401, 403, 404, 422, 503),
    )
    def list_corrections(
        metric_key: Annotated[str | None, Query(alias="metricKey", **NAME_QUERY)] = None,
        record_id: Annotated[str | None, Query(alias="recordId", **NAME_QUERY)] = None,
        start: Annotated[
            str | None,
            Query(
                alias="from",
                description="corrected records timed at or after (ISO-8601)",
                json_schema_extra=TIME_RULE,
            ),
        ] = None,
        end: Annotated[
            str | None,
            Query(
                alias="to",
                description="corrected records timed before (ISO-8601)",
                json_schema_extra=TIME_RULE,
            ),
        ] = None,
        org_id: OrgId = None,
    ) -> Response:
        """The audit trail, oldest first: corrections of one metric (or every metric), one
        record, or records timed in ``[from, to)``."""
        try:
            found = meter.list_corrections(
                metric_key, org_id=org_id, record_id=record_id, start=start, end=end
            )
        except ValidationError as exc:
            names = {"start": "from", "end": "to", "metric_key": "metricKey"}
            if exc.field not in names:
                raise
            raise ValidationError(names[exc.field], exc.problem) from exc
        return json_response({"corrections": found})

    return api


def _required(fields: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """``fields``, a ValidationError naming the first of ``names`` missing."""
    for name in names:
        if name not in fields:
            raise ValidationError(name, "Field required")
    return fields
