"""The blocking HTTP client: the Meter's methods, over a tsmeter server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import IO, Any, Literal, TypeVar

import httpx

from tsmeter.client._protocol import (
    Call,
    Calls,
    Quantity,
    Retry,
    RowCounter,
    TimeLike,
    batch_bodies,
    decode,
    error_for,
    existing_metric,
    record_body,
    retry_after,
    wanted_metric,
    wanted_threshold,
)
from tsmeter.client.batching import Batcher, Rejected
from tsmeter.client.transport import headers, retryable, unreachable
from tsmeter.domain import (
    AlertStatus,
    BatchResult,
    MetricDefinition,
    PeriodType,
    UsageAlert,
    UsageRecord,
    UsageSummary,
    UsageThreshold,
)
from tsmeter.domain.corrections import Correction
from tsmeter.errors import ConflictError, NotFoundError
from tsmeter.metering.planning import same_threshold

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """A tsmeter server's API with the Meter's method names, arguments and return types.

    ``base_url`` is the server (``http://127.0.0.1:8080``), ``api_key`` a key with the scopes
    the calls need (None for a server run with ``--no-auth``). Requests time out after
    ``timeout`` seconds; ``retry`` says how failures are retried (see
    :class:`~tsmeter.client.Retry`). Errors are tsmeter's own (ValidationError naming the
    field, NotFoundError, ...). Use it as a context manager, or call :meth:`close`.

    Example::

        with Client("http://127.0.0.1:8080", api_key=key) as client:
            client.record("api_calls", "org", "org-1", id="req-42")
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retry: Retry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or Retry()
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def batcher(
        self,
        *,
        max_records: int = 1000,
        max_delay: float = 0.2,
        max_pending: int = 100_000,
        enforce: bool = False,
        on_error: Callable[[Rejected], object] | None = None,
    ) -> Batcher:
        """A :class:`~tsmeter.client.Batcher` sending through this client: a batch when
        ``max_records`` wait or the oldest has waited ``max_delay`` seconds."""
        return Batcher(
            self,
            max_records=max_records,
            max_delay=max_delay,
            max_pending=max_pending,
            enforce=enforce,
            on_error=on_error,
        )

    # -- transport --------------------------------------------------------------------
    def _send(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        """The response to ``call`` after retries (read, unless ``stream``: then the caller
        reads and closes it); tsmeter's error for an error answer."""
        request = self._http.build_request(
            call.method, call.path, params=call.params, content=call.content()
        )
        for attempt in range(self.retry.attempts):
            last = attempt + 1 >= self.retry.attempts
            try:
                response = self._http.send(request, stream=True)
                if not stream or response.status_code >= 400:
                    try:
                        response.read()
                    finally:
                        response.close()
            except httpx.TransportError as exc:
                if last or not retryable(call, exc):
                    raise unreachable(call, exc) from exc
                time.sleep(self.retry.delay(attempt))
                continue
            if response.status_code < 400:
                return response
            if response.status_code in (429, 503) and not last:
                wait = retry_after(response.headers.get("Retry-After"))
                time.sleep(self.retry.delay(attempt, wait))
                continue
            raise error_for(
                response.status_code, response.content, response.headers.get("Content-Type", "")
            )
        raise AssertionError("unreachable")  # the loop returns or raises on its last try

    def _run(self, call: Call[T]) -> T:
        response = self._send(call)
        return call.parse(decode(response.content))

    # -- metrics ----------------------------------------------------------------------
    def define_metric(self, key: str, *, exist_ok: bool = False, **fields: Any) -> MetricDefinition:
        """Define a metric (see ``Meter.define_metric``); with ``exist_ok`` one stored with the
        same fields is returned (a key with the read scope is enough then), one whose fields
        differ is a ConflictError naming them."""
        if not exist_ok:
            return self._run(Calls.define_metric(key, exist_ok=False, fields=fields))
        wanted = wanted_metric(key, fields)
        try:  # read first: a key with the read scope can declare a metric that exists
            current = self.get_metric(key, wanted.org_id)
        except NotFoundError:
            try:
                return self._run(Calls.define_metric(key, exist_ok=True, fields=fields))
            except ConflictError:  # defined meanwhile
                current = self.get_metric(key, wanted.org_id)
        return existing_metric(current, wanted)

    def update_metric(
        self, key: str, org_id: str | None = None, **changes: Any
    ) -> MetricDefinition:
        """Change a metric (see ``Meter.update_metric``)."""
        return self._run(Calls.update_metric(key, org_id, changes))

    def delete_metric(self, key: str, org_id: str | None = None, *, purge: bool = False) -> int:
        """Delete a metric; the number of records purged (see ``Meter.delete_metric``)."""
        return self._run(Calls.delete_metric(key, org_id, purge))

    def get_metric(self, key: str, org_id: str | None = None) -> MetricDefinition:
        """One metric; NotFoundError if none (see ``Meter.get_metric``)."""
        return self._run(Calls.get_metric(key, org_id))

    def list_metrics(
        self, org_id: str | None = None, *, all_orgs: bool = False
    ) -> list[MetricDefinition]:
        """Metrics of one scope or every scope (see ``Meter.list_metrics``)."""
        return self._run(Calls.list_metrics(org_id, all_orgs))

    # -- recording --------------------------------------------------------------------
    def record(
        self,
        metric_key: str,
        subject_type: str,
        subject_id: str,
        quantity: Quantity | None = None,
        *,
        timestamp: TimeLike | None = None,
        id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
        org_id: str | None = None,
        enforce: bool = False,
    ) -> UsageRecord:
        """Record one usage event; the record as stored (see ``Meter.record``). Without
        ``id`` one is made before the first try and without ``timestamp`` the time of the
        call is sent, so a retry counts once."""
        body = record_body(
            metric_key,
            subject_type,
            subject_id,
            quantity,
            timestamp=timestamp,
            id=id,
            metadata=metadata,
            source=source,
            org_id=org_id,
        )
        return self._run(Calls.record(body, enforce))

    def record_batch(
        self, records: Iterable[Mapping[str, Any] | UsageRecord], *, enforce: bool = False
    ) -> BatchResult:
        """Record many events, all or none (see ``Meter.record_batch``); ids are given to
        records without one before the first try."""
        return self._run(Calls.record_batch(batch_bodies(records), enforce))

    # -- reading ----------------------------------------------------------------------
    def get_usage(
        self,
        metric_key: str,
        subject_type: str | None = None,
        subject_id: str | None = None,
        *,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        org_id: str | None = None,
        limit: int | None = 1000,
    ) -> list[UsageRecord]:
        """Raw records in ``[start, end)``, oldest first (see ``Meter.get_usage``); at most
        100,000 (the server's limit), also with ``limit=None``: use :meth:`export_usage` for
        more."""
        return self._run(
            Calls.get_usage(metric_key, subject_type, subject_id, start, end, org_id, limit)
        )

    def get_usage_summary(
        self,
        metric_key: str,
        subject_type: str,
        subject_id: str,
        period_type: PeriodType | str | None = None,
        *,
        at: TimeLike | None = None,
        org_id: str | None = None,
    ) -> UsageSummary:
        """One subject's summary for the period containing ``at`` (see
        ``Meter.get_usage_summary``)."""
        return self._run(
            Calls.get_usage_summary(metric_key, subject_type, subject_id, period_type, at, org_id)
        )

    def get_usage_summaries(
        self,
        metric_key: str,
        period_type: PeriodType | str | None = None,
        *,
        start: TimeLike,
        end: TimeLike,
        subject_type: str | None = None,
        subject_id: str | None = None,
        org_id: str | None = None,
    ) -> list[UsageSummary]:
        """Summaries of every period overlapping ``[start, end)`` (see
        ``Meter.get_usage_summaries``)."""
        return self._run(
            Calls.get_usage_summaries(
                metric_key, period_type, start, end, subject_type, subject_id, org_id
            )
        )

    def get_usage_breakdown(
        self,
        metric_key: str,
        period_type: PeriodType | str | None = None,
        *,
        start: TimeLike,
        end: TimeLike,
        group_by: Sequence[str] = (),
        where: Mapping[str, object] | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
        org_id: str | None = None,
        as_of: TimeLike | None = None,
    ) -> list[UsageSummary]:
        """Usage per period, subject and group of ``group_by`` dimension values, of the
        records matching ``where`` (see ``Meter.get_usage_breakdown``)."""
        call = Calls.get_usage_breakdown(
            metric_key, period_type, start, end, group_by, where, subject_type, subject_id,
            org_id, as_of,
        )  # fmt: skip
        return self._run(call)

    def export_usage(
        self,
        out: IO[str],
        metric_key: str | None = None,
        *,
        fmt: Literal["jsonl", "csv"] = "jsonl",
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
        org_id: str | None = None,
    ) -> int:
        """Stream records to ``out`` as JSON Lines or CSV, as the server writes them; return
        the count (see ``Meter.export_usage``)."""
        call = Calls.export_usage(metric_key, fmt, start, end, subject_type, subject_id, org_id)
        response = self._send(call, stream=True)
        counter = RowCounter(fmt)
        try:
            for text in response.iter_text():
                out.write(text)
                counter.feed(text)
        except httpx.TransportError as exc:
            raise unreachable(call, exc) from exc
        finally:
            response.close()
        return counter.count()

    # -- corrections ------------------------------------------------------------------
    def cancel_record(
        self, record_id: str, *, reason: str, actor: str, correction_id: str | None = None
    ) -> Correction:
        """Cancel a stored record (see ``Meter.cancel_record``); a retry is a no-op
        (``applied`` False)."""
        return self._run(Calls.cancel_record(record_id, reason, actor, correction_id))

    def amend_record(
        self,
        record_id: str,
        quantity: int | float | str | Decimal,
        *,
        reason: str,
        actor: str,
        correction_id: str | None = None,
    ) -> Correction:
        """Replace a stored record's quantity (see ``Meter.amend_record``); a retry is a
        no-op (``applied`` False)."""
        return self._run(Calls.amend_record(record_id, quantity, reason, actor, correction_id))

    def list_corrections(
        self,
        metric_key: str | None = None,
        *,
        record_id: str | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        org_id: str | None = None,
    ) -> list[Correction]:
        """The corrections audit trail, oldest first (see ``Meter.list_corrections``)."""
        return self._run(Calls.list_corrections(metric_key, org_id, record_id, start, end))

    # -- thresholds -------------------------------------------------------------------
    def create_threshold(
        self,
        metric_key: str,
        subject_type: str,
        threshold: int | float | str | Decimal,
        subject_id: str = "*",
        *,
        exist_ok: bool = False,
        **fields: Any,
    ) -> UsageThreshold:
        """Create a limit (see ``Meter.create_threshold``); with ``exist_ok`` one of the same
        metric, org, subject, period and action stored with the same fields is returned, one
        whose fields differ is a ConflictError naming them."""
        if exist_ok:
            wanted = wanted_threshold(metric_key, subject_type, threshold, subject_id, fields)
            stored = self.list_thresholds(metric_key)
            current = same_threshold(stored, wanted)
            if current is not None:
                return current
        call = Calls.create_threshold(metric_key, subject_type, threshold, subject_id, fields)
        return self._run(call)

    def get_threshold(self, threshold_id: str) -> UsageThreshold:
        """The threshold with this id; NotFoundError if none."""
        return self._run(Calls.get_threshold(threshold_id))

    def update_threshold(self, threshold_id: str, **changes: Any) -> UsageThreshold:
        """Change a threshold (see ``Meter.update_threshold``)."""
        return self._run(Calls.update_threshold(threshold_id, changes))

    def delete_threshold(self, threshold_id: str) -> None:
        """Delete a threshold; NotFoundError if none."""
        self._run(Calls.delete_threshold(threshold_id))

    def list_thresholds(
        self,
        metric_key: str | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
    ) -> list[UsageThreshold]:
        """Thresholds, optionally of one metric / subject type / subject."""
        return self._run(Calls.list_thresholds(metric_key, subject_type, subject_id))

    # -- alerts -----------------------------------------------------------------------
    def list_alerts(
        self,
        status: AlertStatus | str | None = None,
        *,
        metric_key: str | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
    ) -> list[UsageAlert]:
        """Alerts, newest first, optionally filtered (see ``Meter.list_alerts``)."""
        return self._run(Calls.list_alerts(status, metric_key, subject_type, subject_id))

    def acknowledge_alert(self, alert_id: str) -> UsageAlert:
        """Mark an alert as seen."""
        return self._run(Calls.acknowledge_alert(alert_id))

    def resolve_alert(self, alert_id: str) -> UsageAlert:
        """Close an alert by hand."""
        return self._run(Calls.resolve_alert(alert_id))
