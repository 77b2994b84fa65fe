"""``/v1/usage``: record usage (one record, or a batch all or nothing), read records,
summaries and breakdowns by dimension, stream an export."""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from tsmeter.api.app import Service, errors, request_body
from tsmeter.api.bodies import decode, fields_of, plain_numbers, read_body
from tsmeter.api.problems import ApiError
from tsmeter.api.routes import json_response, scope
from tsmeter.api.schemas import (
    NAME_QUERY,
    TIME_RULE,
    BatchAccepted,
    RecordBatch,
    RecordIn,
    RecordList,
    SummaryList,
)
from tsmeter.api.streaming import ExportStream
from tsmeter.domain import BatchResult, PeriodType, UsageRecord, UsageSummary, new_ids
from tsmeter.domain.filters import parse_group_by, parse_where
from tsmeter.domain.validation import parse_timestamp
from tsmeter.errors import (
    OutboxFullError,
    QuotaExceededError,
    StorageUnavailableError,
    ValidationError,
)

__all__ = ["router"]

T = TypeVar("T")

OrgId = Annotated[str | None, Query(alias="orgId", **NAME_QUERY)]
MetricKey = Annotated[str, Query(alias="metricKey", **NAME_QUERY)]
SubjectType = Annotated[str | None, Query(alias="subjectType", **NAME_QUERY)]
SubjectId = Annotated[str | None, Query(alias="subjectId", **NAME_QUERY)]
From = Annotated[
    str | None,
    Query(alias="from", description="ISO-8601 time, inclusive", json_schema_extra=TIME_RULE),
]
To = Annotated[
    str | None,
    Query(alias="to", description="ISO-8601 time, exclusive", json_schema_extra=TIME_RULE),
]
Enforce = Annotated[
    bool, Query(description="refuse (403 quota-exceeded) what would pass a BLOCK threshold")
]

#: the Meter's argument names, as the query parameters that carry them
_PARAMS = {
    "start": "from",
    "end": "to",
    "metric_key": "metricKey",
    "period_type": "periodType",
    "group_by": "groupBy",
    "as_of": "asOf",
}

_REQUIRED = ("metric_key", "subject_type", "subject_id")


def _named(call: Callable[[], T]) -> T:
    """``call()``, a ValidationError about a Meter argument naming the query parameter."""
    try:
        return call()
    except ValidationError as exc:
        head, dot, rest = exc.field.partition(".")
        name = _PARAMS.get(head) or _PARAMS.get(head.partition("[")[0])
        if name is None:
            raise
        field = name + head[len(head.partition("[")[0]) :] + dot + rest
        raise ValidationError(field, exc.problem) from exc


def router(service: Service) -> APIRouter:
    """The usage routes over ``service.meter``."""
    meter = service.meter
    settings = service.settings
    counted = service.telemetry
    api = APIRouter(prefix="/v1/usage", tags=["usage"])

    def rejected(exc: Exception, n: int) -> None:
        reason = (
            "validation"
            if isinstance(exc, ValidationError)
            else "quota"
            if isinstance(exc, QuotaExceededError)
            else "outbox_full"
            if isinstance(exc, OutboxFullError)
            else "unavailable"
            if isinstance(exc, StorageUnavailableError)
            else "too_large"
            if isinstance(exc, ApiError) and exc.status == 413
            else "malformed"
            if isinstance(exc, ApiError)
            else "other"
        )
        counted.rejected.labels(reason).inc(n)

    @api.post(
        "/records",
        operation_id="usage.record",
        status_code=201,
        response_model=UsageRecord,
        dependencies=scope(service, "ingest"),
        openapi_extra=request_body(RecordIn),
        responses=errors(400, 401, 403, 413, 422, 429, 503),
    )
    async def record(request: Request, enforce: Enforce = False) -> Response:
        """Store one record and return it as stored (decimals as strings). A record whose
        ``id`` is stored already is returned as it was stored, and counts once."""
        try:
            fields = fields_of(decode(await read_body(request, settings.max_json_bytes)), RecordIn)
            for name in _REQUIRED:
                if name not in fields:
                    raise ValidationError(_camel(name), "Field required")
            if isinstance(fields.get("metadata"), (dict, list)):
                plain_numbers(fields["metadata"])

            def store() -> UsageRecord:
                service.gate.check(1)  # reads the outbox's status now and then: not on the loop
                return meter.record(**fields, enforce=enforce)

            stored = await run_in_threadpool(store)
        except Exception as exc:
            rejected(exc, 1)
            raise
        counted.accepted.inc()
        return json_response(stored, 201)

    @api.post(
        "/records/batch",
        operation_id="usage.recordBatch",
        response_model=BatchAccepted,
        dependencies=scope(service, "ingest"),
        openapi_extra=request_body(RecordBatch),
        responses=errors(400, 401, 403, 413, 422, 429, 503),
    )
    async def record_batch(request: Request, enforce: Enforce = False) -> Response:
        """Store up to 10,000 records (16 MiB) all or nothing: one bad record stores none and
        is named (``records[3].quantity``). Ids are idempotency keys: a retried batch counts
        once. A record without an id gets one; ``ids`` lists every record's, in order."""
        taken: list[int] = [1]  # how many records the body held, once known

        def store(body: bytes) -> tuple[list[str], BatchResult]:
            # decoding a large body takes a while: here, not on the event loop
            records = _records(decode(body))
            taken[0] = len(records)
            for record in records:
                if type(record) is dict and isinstance(record.get("metadata"), (dict, list)):
                    plain_numbers(record["metadata"])
            if len(records) > settings.max_batch_records:
                raise ApiError(
                    413,
                    "too-large",
                    "Content too large",
                    f"{len(records):,} records; a batch holds at most"
                    f" {settings.max_batch_records:,}",
                    "records",
                )
            ids = _ids(records)
            service.gate.check(len(records))
            return ids, meter.record_batch(records, enforce=enforce)

        try:
            body = await read_body(request, settings.max_body_bytes)
            ids, result = await run_in_threadpool(store, body)
        except Exception as exc:
            rejected(exc, taken[0])
            raise
        size = taken[0]
        counted.accepted.inc(size)
        return json_response(
            {
                "accepted": size,
                "ids": ids,
                "recorded": result.recorded,
                "duplicates": result.duplicates,
                "queued": result.queued,
            }
        )

    @api.get(
        "/records",
        operation_id="usage.get",
        response_model=RecordList,
        dependencies=scope(service, "read"),
        responses=errors(401, 403, 404, 422, 503),
    )
    def get_usage(
        metric_key: MetricKey,
        subject_type: SubjectType = None,
        subject_id: SubjectId = None,
        start: From = None,
        end: To = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
        org_id: OrgId = None,
    ) -> Response:
        """Raw records of a metric (optionally one subject) in ``[from, to)``, oldest first."""
        records = _named(
            lambda: meter.get_usage(
                metric_key,
                subject_type,
                subject_id,
                start=start,
                end=end,
                org_id=org_id,
                limit=limit,
            )
        )
        return json_response({"records": records})

    @api.get(
        "/summary",
        operation_id="usage.getSummary",
        response_model=UsageSummary,
        dependencies=scope(service, "read"),
        responses=errors(401, 403, 404, 422, 503),
    )
    def get_summary(
        metric_key: MetricKey,
        subject_type: Annotated[str, Query(alias="subjectType", **NAME_QUERY)],
        subject_id: Annotated[str, Query(alias="subjectId", **NAME_QUERY)],
        period_type: Annotated[PeriodType | None, Query(alias="periodType")] = None,
        at: Annotated[
            str | None,
            Query(description="a time in the period (default: now)", json_schema_extra=TIME_RULE),
        ] = None,
        org_id: OrgId = None,
    ) -> Response:
        """One subject's usage for the period containing ``at`` (zero if none recorded)."""
        summary = _named(
            lambda: meter.get_usage_summary(
                metric_key, subject_type, subject_id, period_type, at=at, org_id=org_id
            )
        )
        return json_response(summary)

    @api.get(
        "/summaries",
        operation_id="usage.getSummaries",
        response_model=SummaryList,
        dependencies=scope(service, "read"),
        responses=errors(401, 403, 404, 422, 503),
    )
    def get_summaries(
        metric_key: MetricKey,
        start: Annotated[str, Query(alias="from", json_schema_extra=TIME_RULE)],
        end: Annotated[str, Query(alias="to", json_schema_extra=TIME_RULE)],
        period_type: Annotated[PeriodType | None, Query(alias="periodType")] = None,
        subject_type: SubjectType = None,
        subject_id: SubjectId = None,
        org_id: OrgId = None,
    ) -> Response:
        """Summaries of every period overlapping ``[from, to)`` that has records."""
        summaries = _named(
            lambda: meter.get_usage_summaries(
                metric_key,
                period_type,
                start=start,
                end=end,
                subject_type=subject_type,
                subject_id=subject_id,
                org_id=org_id,
            )
        )
        return json_response({"summaries": summaries})

    @api.get(
        "/breakdown",
        operation_id="usage.getBreakdown",
        response_model=SummaryList,
        dependencies=scope(service, "read"),
        responses=errors(401, 403, 404, 422, 503),
    )
    def get_breakdown(
        metric_key: MetricKey,
        start: Annotated[str, Query(alias="from", json_schema_extra=TIME_RULE)],
        end: Annotated[str, Query(alias="to", json_schema_extra=TIME_RULE)],
        period_type: Annotated[PeriodType | None, Query(alias="periodType")] = None,
        group_by: Annotated[
            list[str] | None,
            Query(
                alias="groupBy",
                description="dimensions to group by, in order: repeated (groupBy=model&"
                "groupBy=region) or separated by commas",
            ),
        ] = None,
        where: Annotated[
            list[str] | None,
            Query(
                description="NAME=VALUE (region=eu), repeated for several dimensions; NAME="
                " keeps the records without a value for it",
            ),
        ] = None,
        subject_type: SubjectType = None,
        subject_id: SubjectId = None,
        org_id: OrgId = None,
        as_of: Annotated[
            str | None,
            Query(
                alias="asOf",
                description="the time of the reading (default: now): a time-weighted sum's"
                " last reading holds until then",
                json_schema_extra=TIME_RULE,
            ),
        ] = None,
    ) -> Response:
        """Usage per period, subject and group of dimension values: one summary per
        combination of the ``groupBy`` dimensions' values (``dimensions`` holds them; null
        for records without a value), of the records that match ``where``. Without
        ``groupBy``, one summary per period and subject, filtered."""
        filters = parse_where(where or ())
        reading_time = None if as_of is None else parse_timestamp("asOf", as_of)  # checked always
        summaries = _named(
            lambda: meter.get_usage_breakdown(
                metric_key,
                period_type,
                start=start,
                end=end,
                group_by=parse_group_by(group_by or ()),
                where=filters or None,
                subject_type=subject_type,
                subject_id=subject_id,
                org_id=org_id,
                as_of=reading_time,
            )
        )
        return json_response({"summaries": summaries})

    @api.get(
        "/export",
        operation_id="usage.export",
        dependencies=scope(service, "read"),
        responses={
            200: {
                "content": {"application/x-ndjson": {}, "text/csv": {}},
                "description": "The records, streamed",
            },
            **errors(401, 403, 404, 422, 503),
        },
    )
    def export(
        metric_key: Annotated[str | None, Query(alias="metricKey", **NAME_QUERY)] = None,
        fmt: Annotated[Literal["ndjson", "csv"], Query(alias="format")] = "ndjson",
        start: From = None,
        end: To = None,
        subject_type: SubjectType = None,
        subject_id: SubjectId = None,
        org_id: OrgId = None,
    ) -> Response:
        """Every record (of one metric, or all) streamed as NDJSON or CSV, in the server's
        time zone, oldest first per metric: the format ``tsmeter usage import`` reads."""

        def run(out: IO[str]) -> object:
            return _named(
                lambda: meter.export_usage(
                    out,
                    metric_key,
                    fmt="jsonl" if fmt == "ndjson" else "csv",
                    start=start,
                    end=end,
                    subject_type=subject_type,
                    subject_id=subject_id,
                    org_id=org_id,
                )
            )

        stream = ExportStream(run)
        first = stream.first()
        media = "application/x-ndjson" if fmt == "ndjson" else "text/csv; charset=utf-8"
        return StreamingResponse(stream.rest(first), media_type=media)

    return api


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _records(body: object) -> list[Any]:
    """The ``records`` array of a batch body."""
    if not isinstance(body, dict):
        raise ValidationError("", "the body must be a JSON object with a 'records' array")
    extra = [key for key in body if key != "records"]
    if extra:
        raise ValidationError(str(extra[0]), "Extra inputs are not permitted")
    records = body.get("records")
    if not isinstance(records, list):
        raise ValidationError("records", "must be an array of records")
    return records


def _ids(records: list[Any]) -> list[str]:
    """Every record's id, in order; a record (a JSON object) without one gets one now, so the
    caller learns it. What is not an object is left for the Meter to name."""
    missing = [r for r in records if type(r) is dict and r.get("id") is None]
    for record, fresh in zip(missing, new_ids(len(missing)), strict=True):
        record["id"] = fresh
    return [r.get("id") if type(r) is dict else None for r in records]  # type: ignore[misc]
