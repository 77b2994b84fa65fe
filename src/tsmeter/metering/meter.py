"""The Meter: tsmeter's service API, named after the metering contracts.

The Meter is a facade over services that each own their dependencies and nothing else:

* metric definitions and their resolution: :mod:`tsmeter.metering.catalog`
* recording, one unit of work per call: :mod:`tsmeter.metering.recording`
* queries and exports: :mod:`tsmeter.metering.reading`; aggregation runs:
  :mod:`tsmeter.metering.aggregation`
* thresholds, the monitor, alerts, quotas and the event log: :mod:`tsmeter.limits`

It builds them in its constructor over the ports it is given and owns their lifecycle
(the outbox, the close hooks, closing the stores); each public method hands its call to one
service.

>>> import tsmeter
>>> with tsmeter.connect("sqlite:///:memory:") as meter:
...     _ = meter.define_metric("api_calls", aggregation_type="COUNT")
...     _ = meter.record("api_calls", "org", "org-1", timestamp="2026-01-05T10:00:00Z")
...     meter.get_usage_summary("api_calls", "org", "org-1", "MONTHLY",
...                             at="2026-01-20T00:00:00Z").total_quantity
Decimal('1')
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from functools import partial
from typing import IO, Any, Literal, TypeVar

from tsmeter.access import ApiKeys
from tsmeter.domain import (
    AggregationResult,
    AlertStatus,
    BatchResult,
    EvaluationResult,
    MeteringEvent,
    MetricDefinition,
    PeriodType,
    RecordRow,
    UsageAlert,
    UsageRecord,
    UsageSummary,
    UsageThreshold,
)
from tsmeter.domain.corrections import Correction
from tsmeter.domain.events import Event, EventBus, MetricDefined
from tsmeter.domain.modelio import TimeLike, build
from tsmeter.domain.periods import Calendar
from tsmeter.domain.quantities import DEFAULT_PRECISION, Rounding, to_units
from tsmeter.errors import TsmeterError, ValidationError
from tsmeter.limits.alerts import Alerts
from tsmeter.limits.event_log import EventLog
from tsmeter.limits.monitor import Monitor
from tsmeter.limits.quotas import QuotaDecision, QuotaView
from tsmeter.limits.thresholds import Thresholds
from tsmeter.metering.aggregation import Aggregation
from tsmeter.metering.catalog import MetricCatalog
from tsmeter.metering.corrections import DEFAULT_WINDOW, Corrections
from tsmeter.metering.declared import DesiredState
from tsmeter.metering.intake import Intake
from tsmeter.metering.planning import Plan, Planner, Step, same_threshold
from tsmeter.metering.properties import PropertyCheck
from tsmeter.metering.reading import Queries
from tsmeter.metering.recording import Recorder, RecordSinks
from tsmeter.outbox.durable import Outbox
from tsmeter.ports import Capabilities, Catalog, UsageStore

__all__ = ["Meter"]

log = logging.getLogger("tsmeter.meter")

E = TypeVar("E", bound=Event)
M = TypeVar("M", bound="Meter")


class Meter:
    """Records usage, defines metrics and thresholds, aggregates and answers queries.

    Build one with :func:`tsmeter.connect`; it is a context manager and
    thread-safe. ``timezone`` is the IANA zone periods are computed in;
    ``quota_refresh`` how often (s) ``check`` and ``enforce=True`` read usage from the
    store again; ``correction_window`` how long after its timestamp a record can be cancelled
    or amended (a timedelta or seconds; default 90 days).
    """

    #: how long ``close`` lets the outbox deliver before it leaves the rest for a later process
    close_timeout = 30.0

    def __init__(
        self,
        store: UsageStore,
        catalog: Catalog,
        *,
        timezone: str = "UTC",
        chunk_size: int = 200_000,
        bus: EventBus | None = None,
        metric_cache_seconds: float = 30.0,
        outbox: str | None = None,
        durability: str = "outbox",
        outbox_options: dict[str, Any] | None = None,
        capabilities: Capabilities | None = None,
        quota_refresh: float = 5.0,
        correction_window: timedelta | float = DEFAULT_WINDOW,
    ) -> None:
        if durability not in ("outbox", "memory"):
            raise ValidationError("durability", f"must be 'outbox' or 'memory', got {durability!r}")
        self.store = store
        self.catalog = catalog
        #: what the store can do beyond the UsageStore port, as bootstrap wired it
        self.capabilities = capabilities or Capabilities()
        self.calendar = Calendar(timezone)
        self.timezone = timezone
        self.events = bus or EventBus()
        self.durability = durability
        #: the PostHog mirror attached by :func:`tsmeter.connect`, if one is configured
        self.mirror: Any = None
        #: the HTTP API's keys in the state store (see :mod:`tsmeter.access`); None where
        #: bootstrap wired no key store
        self.api_keys = (
            ApiKeys(self.capabilities.keys) if self.capabilities.keys is not None else None
        )
        self._closed = False
        self._close_hooks: list[Callable[[], object]] = []
        self._sinks = RecordSinks()
        self._metrics = MetricCatalog(catalog, store, self.events,
                                      cache_seconds=metric_cache_seconds)  # fmt: skip
        # a store that writes dimensions as tags (InfluxDB) asks the catalog for the metrics
        # it was not told about, and hears of new definitions at once
        look_up = getattr(store, "look_up_metrics", None)
        if look_up is not None:
            look_up(catalog.find_metric)
            know = store.know_metrics  # type: ignore[attr-defined]
            self.events.subscribe(MetricDefined, lambda event: know([event.metric]))
        self.outbox: Outbox | None = None
        if outbox is not None:
            self.outbox = _open_outbox(outbox, store, self.capabilities, self._sinks,
                                       self._metrics.resolve, outbox_options or {})  # fmt: skip
        # with an outbox, rows count before the store holds them: the view keeps them until
        # they are delivered, so that a refresh does not drop them
        self._quotas = QuotaView(
            store,
            catalog,
            self.calendar,
            self._metrics.resolve,
            refresh_seconds=quota_refresh,
            unstored=self.outbox is not None,
        )
        if self.outbox is not None:
            self._sinks.add(self._quotas.stored)
        self._recorder = Recorder(
            store, Intake(self._metrics.resolve, PropertyCheck(
                self.capabilities.dimension_values)), self._quotas, self.events, self._sinks,
            outbox=self.outbox, durable=durability == "outbox",
            stream=self.capabilities.stream, chunk_size=chunk_size,
            metric_of=self._metrics.resolve,
        )  # fmt: skip
        self._queries = Queries(store, self._metrics, self.calendar, settle=self._settle)
        self._aggregation = Aggregation(store, self.calendar, self.events, settle=self._settle)
        self._thresholds = Thresholds(catalog, self._metrics.get_metric, self._quotas)
        self._event_log = EventLog(store)
        self._monitor = Monitor(store, catalog, self.calendar, self._event_log, self.events,
                                settle=self._settle)  # fmt: skip
        self._alerts = Alerts(catalog)
        self._corrections = Corrections(store, self._metrics.resolve, self.events, self._quotas,
                                        window=correction_window, settle=self._settle)  # fmt: skip
        self._planner = Planner(self._metrics, self._thresholds, self._has_records)

    # -- metrics ----------------------------------------------------------------------
    def define_metric(self, key: str, *, exist_ok: bool = False, **fields: Any) -> MetricDefinition:
        """Define a metric; ConflictError if the key exists in that org scope.

        With ``exist_ok`` it is safe to repeat (at every start-up): a metric that exists with
        the same fields is returned as stored; one whose fields differ is a ConflictError
        naming them. Example:
        ``meter.define_metric("storage_gb", aggregation_type="MAX", unit="GB", exist_ok=True)``.
        """
        return self._metrics.define_metric(key, exist_ok=exist_ok, **fields)

    def update_metric(
        self, key: str, org_id: str | None = None, **changes: Any
    ) -> MetricDefinition:
        """Change a metric's name, description, unit, aggregation type or reset period.

        Summaries keep their components, so a new aggregation type applies to
        past periods too. Example: ``meter.update_metric("api_calls", unit="calls")``.
        """
        return self._metrics.update_metric(key, org_id, **changes)

    def delete_metric(self, key: str, org_id: str | None = None, *, purge: bool = False) -> int:
        """Delete a metric; with ``purge=True`` its records and summaries go too.

        Without ``purge`` the records stay (ConflictError is not raised: the
        definition can be re-created and the history is still there). Returns
        the number of records purged. Example: ``meter.delete_metric("old", purge=True)``.
        """
        return self._metrics.delete_metric(key, org_id, purge=purge)

    def get_metric(self, key: str, org_id: str | None = None) -> MetricDefinition:
        """The metric ``key`` in ``org_id``'s scope (None: global); NotFoundError if none.

        Example: ``meter.get_metric("api_calls").aggregation_type``.
        """
        return self._metrics.get_metric(key, org_id)

    def list_metrics(
        self, org_id: str | None = None, *, all_orgs: bool = False
    ) -> list[MetricDefinition]:
        """Metrics of one scope (global by default), or of every scope with ``all_orgs``.

        Example: ``[m.key for m in meter.list_metrics()]``.
        """
        return self._metrics.list_metrics(org_id, all_orgs=all_orgs)

    # -- recording --------------------------------------------------------------------
    def record(
        self,
        metric_key: str,
        subject_type: str,
        subject_id: str,
        quantity: int | float | str | Decimal | None = None,
        *,
        timestamp: TimeLike | None = None,
        id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
        org_id: str | None = None,
        enforce: bool = False,
    ) -> UsageRecord:
        """Record one usage event and return it as stored.

        ``id`` is the idempotency key: if a record with this id exists, that
        stored record is returned and nothing is counted again. ``quantity`` (an int, a
        float by its shortest repr, a decimal string or a Decimal; at most the metric's
        ``precision`` decimal places unless it declares a ``rounding``) defaults to 1 for
        COUNT metrics; ``timestamp`` to now (must be aware). The record returned carries the
        quantity as a Decimal.
        With ``enforce``, QuotaExceededError is raised instead of recording past a BLOCK
        threshold (see :meth:`check`).
        Example: ``meter.record("api_calls", "org", "org-123", id="req-42")``.
        """
        return self._recorder.record(
            metric_key, subject_type, subject_id, quantity, timestamp=timestamp, id=id,
            metadata=metadata, source=source, org_id=org_id, enforce=enforce,
        )  # fmt: skip

    def record_batch(
        self, records: Iterable[Mapping[str, Any] | UsageRecord], *, enforce: bool = False
    ) -> BatchResult:
        """Record many events: all are validated first (one bad record stores nothing), then
        written (in transactions of ``chunk_size`` where the store has transactions). Ids
        already stored count once.

        Records are mappings with the fields of :class:`UsageRecord` (camelCase
        or snake_case) or UsageRecord objects. If the store fails part-way,
        StorageUnavailableError says how many were stored; retrying with the
        same ids is safe. With ``enforce``, the whole batch is refused with
        QuotaExceededError if one of its records would pass a BLOCK threshold.
        Example::

            meter.record_batch([{"metricKey": "api_calls", "subjectType": "org",
                                 "subjectId": "org-1", "id": "req-1"}])
        """
        return self._recorder.record_batch(records, enforce=enforce)

    def validate_records(
        self, records: Iterable[Mapping[str, Any] | UsageRecord]
    ) -> list[ValidationError | None]:
        """Check records one by one without storing anything: ``None`` for each good record,
        else the error naming its field. Example: ``meter.validate_records([{"metricKey": "x"}])``.
        """
        return self._recorder.validate_records(records)

    def add_record_sink(self, sink: Callable[[Sequence[RecordRow]], None]) -> Callable[[], None]:
        """Call ``sink`` with the rows of every ``record``/``record_batch`` call once they are
        stored (a batch may include ids that were stored before: sinks must be idempotent
        by record id). A failing sink is logged, never raised: it cannot fail recording.
        Returns a function that removes it. Example: ``meter.add_record_sink(mirror.rows)``.
        """
        return self._sinks.add(sink)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every record accepted so far is in the store (with an outbox; at once
        without); return whether that happened within ``timeout`` seconds.
        Example: ``meter.flush()``."""
        return self.outbox is None or self.outbox.drain(timeout)

    def _settle(self) -> None:
        """Before a read: let the outbox deliver what this process accepted (bounded), so a
        read after a write sees it while the store is up."""
        if self.outbox is not None:
            self.outbox.drain(10.0)

    # -- corrections --------------------------------------------------------------------
    def cancel_record(
        self, record_id: str, *, reason: str, actor: str, correction_id: str | None = None
    ) -> Correction:
        """Cancel a stored record: it no longer counts anywhere, and its id stays known
        (recording it again counts nothing). ``reason`` and ``actor`` (who) are kept in the
        audit trail with the time (see :meth:`list_corrections`).

        Idempotent by ``correction_id`` (default: derived from the record id, so a retry is
        a no-op and returns ``applied=False``). Summaries of the record's periods are
        recomputed by the next aggregation run and reads see the change at once.
        NotFoundError for an unknown id; ValidationError naming ``recordId`` for a record
        older than ``correction_window``. Example:
        ``meter.cancel_record("req-42", reason="test traffic", actor="ops@example.com")``.
        """
        return self._corrections.cancel(record_id, reason=reason, actor=actor,
                                        correction_id=correction_id)  # fmt: skip

    def amend_record(
        self,
        record_id: str,
        quantity: int | float | str | Decimal,
        *,
        reason: str,
        actor: str,
        correction_id: str | None = None,
    ) -> Correction:
        """Replace the quantity of a stored record (its subject, time and properties stay: a
        record in the wrong subject or time is cancelled and recorded anew), with an audit
        row as :meth:`cancel_record`. Idempotent by ``correction_id`` (default: derived from
        the record id and the new quantity). ConflictError for a cancelled record. Example:
        ``meter.amend_record("req-42", "2.5", reason="meter misread", actor="ops")``.
        """
        return self._corrections.amend(record_id, quantity, reason=reason, actor=actor,
                                       correction_id=correction_id)  # fmt: skip

    def list_corrections(
        self,
        metric_key: str | None = None,
        *,
        record_id: str | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        org_id: str | None = None,
    ) -> list[Correction]:
        """The audit trail of corrections, oldest first: of one metric (``org_id``: its
        org's own; None: the global one) or of every metric (``org_id``: that org's), of one
        record, of records timed in ``[start, end)``. Example:
        ``[c.reason for c in meter.list_corrections("api_calls")]``.
        """
        return self._corrections.list_corrections(metric_key, record_id=record_id,
                                                  start=start, end=end, org_id=org_id)  # fmt: skip

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
        """Raw records of a metric (optionally one subject) in ``[start, end)``, oldest first.

        Example: ``meter.get_usage("api_calls", "org", "org-1", start="2026-01-01T00:00:00Z")``.
        """
        return self._queries.get_usage(metric_key, subject_type, subject_id, start=start,
                                       end=end, org_id=org_id, limit=limit)  # fmt: skip

    def iter_usage(
        self,
        metric_key: str,
        subject_type: str | None = None,
        subject_id: str | None = None,
        *,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        org_id: str | None = None,
        limit: int | None = None,
    ) -> Iterator[UsageRecord]:
        """Like :meth:`get_usage` but streamed and unlimited by default."""
        return self._queries.iter_usage(metric_key, subject_type, subject_id, start=start,
                                        end=end, org_id=org_id, limit=limit)  # fmt: skip

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
        neutralise: bool = True,
        progress: Callable[[int], object] | None = None,
    ) -> int:
        """Stream records (one metric, or every metric) to ``out`` as JSON Lines or CSV; return
        the count. ``org_id`` picks an org's own metric (with ``metric_key``) or limits the
        export to that org's metrics. Timestamps are in the Meter's time zone with their
        offset; each metric is read from one snapshot of the store, oldest first. In CSV,
        ``neutralise`` (on by default) passes the text cells (not quantities or timestamps)
        through :func:`~tsmeter.metering.export.neutralise_cell`, so a spreadsheet never runs
        them as formulas. ``progress(n)`` is told of every ``n`` records written.
        Example: ``meter.export_usage(sys.stdout, "api_calls")``.
        """
        return self._queries.export_usage(
            out, metric_key, fmt=fmt, start=start, end=end, subject_type=subject_type,
            subject_id=subject_id, org_id=org_id, neutralise=neutralise, progress=progress,
        )  # fmt: skip

    def count_usage(
        self,
        metric_key: str | None = None,
        *,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
        org_id: str | None = None,
    ) -> int | None:
        """How many records :meth:`export_usage` with the same arguments would write (None
        where the store cannot count without reading them), e.g. for a progress bar.
        Example: ``meter.count_usage("api_calls")``.
        """
        return self._queries.count_usage(metric_key, start=start, end=end,
                                         subject_type=subject_type, subject_id=subject_id,
                                         org_id=org_id)  # fmt: skip

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
        """Summaries of every period overlapping ``[start, end)`` that has records, always fresh
        (records that arrived since the last aggregation are included).

        Example: ``meter.get_usage_summaries("api_calls", "DAILY", start=s, end=e)``.
        """
        return self._queries.get_usage_summaries(
            metric_key, period_type, start=start, end=end, subject_type=subject_type,
            subject_id=subject_id, org_id=org_id,
        )  # fmt: skip

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
        """The summary of one subject for the period containing ``at`` (default: now);
        zero usage if nothing was recorded. ``period_type`` defaults to the metric's reset
        period. Example: ``meter.get_usage_summary("api_calls", "org", "org-1", "MONTHLY")``.
        """
        return self._queries.get_usage_summary(metric_key, subject_type, subject_id,
                                               period_type, at=at, org_id=org_id)  # fmt: skip

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
        """Usage per period overlapping ``[start, end)``, subject and group of the values of
        the metric's dimensions ``group_by``, of the records matching ``where`` (``{name:
        value}``, None: records without it); each summary's ``dimensions`` holds its group's
        values. ``as_of`` (default now) ends a time-weighted sum's readings. Computed from
        the records, always fresh (see :mod:`tsmeter.metering.measures`).
        Example: ``meter.get_usage_breakdown("tokens", "MONTHLY", start=s, end=e,
        group_by=["model"])``.
        """
        return self._queries.get_usage_breakdown(
            metric_key, period_type, start=start, end=end, group_by=group_by, where=where,
            subject_type=subject_type, subject_id=subject_id, org_id=org_id, as_of=as_of,
        )  # fmt: skip

    def aggregate(
        self,
        period_type: PeriodType | str,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> AggregationResult:
        """Roll records up into summaries of ``period_type`` in the meter's time zone.

        Without a range it is incremental: every period touched since the last
        run, late records included. With a range, every period overlapping it
        is recomputed. Running it again gives identical summaries. A level below
        ``period_type`` is used (and brought up to date first) where it is kept, i.e. its own
        roll-up has run in this zone; otherwise the records are read.
        Example: ``meter.aggregate("DAILY")``.
        """
        return self._aggregation.aggregate(period_type, start, end)

    # -- thresholds -------------------------------------------------------------------
    def create_threshold(self, metric_key: str, subject_type: str,
                         threshold: int | float | str | Decimal, subject_id: str = "*", *,
                         exist_ok: bool = False, **fields: Any) -> UsageThreshold:  # fmt: skip
        """Create a limit for one subject (or ``*``: every subject of the type).

        With ``exist_ok=True`` it is safe to repeat: a threshold of the same metric, org, subject
        type and id, period and action that exists with the same fields is returned as
        stored; one whose fields differ is a ConflictError naming them.
        Example: ``meter.create_threshold("api_calls", "org", 10_000, action="BLOCK")``.
        """
        if exist_ok:
            wanted = build(UsageThreshold, {
                **fields, "metric_key": metric_key, "subject_type": subject_type,
                "subject_id": subject_id, "threshold": threshold,
            })  # fmt: skip
            current = same_threshold(self._thresholds.list_thresholds(metric_key), wanted)
            if current is not None:
                return current
        return self._thresholds.create_threshold(metric_key, subject_type, threshold,
                                                 subject_id, **fields)  # fmt: skip

    def get_threshold(self, threshold_id: str) -> UsageThreshold:
        """The threshold with this id; NotFoundError if none.

        Example: ``meter.get_threshold(t.id).threshold``.
        """
        return self._thresholds.get_threshold(threshold_id)

    def update_threshold(self, threshold_id: str, **changes: Any) -> UsageThreshold:
        """Change a threshold's limit, warn level, action or notification targets.

        Example: ``meter.update_threshold(t.id, threshold=20_000)``.
        """
        return self._thresholds.update_threshold(threshold_id, **changes)

    def delete_threshold(self, threshold_id: str) -> None:
        """Delete a threshold; NotFoundError if none. Example: ``meter.delete_threshold(t.id)``."""
        self._thresholds.delete_threshold(threshold_id)

    def list_thresholds(self, metric_key: str | None = None, subject_type: str | None = None,
                        subject_id: str | None = None) -> list[UsageThreshold]:  # fmt: skip
        """Thresholds, optionally for one metric / subject type / subject.

        Example: ``meter.list_thresholds("api_calls")``.
        """
        return self._thresholds.list_thresholds(metric_key, subject_type, subject_id)

    # -- declared state ---------------------------------------------------------------
    def plan(self, desired: DesiredState | Mapping[str, Any], *, prune: bool = False) -> Plan:
        """What applying ``desired`` (a :class:`~tsmeter.metering.declared.DesiredState`, or
        a mapping with its ``metrics``, ``channels`` and ``thresholds``) would change, step by
        step and field by field; nothing is changed. DeclarationError names every problem
        that would stop it (see :mod:`tsmeter.metering.planning`).

        Example: ``meter.plan(tsmeter.metering.declared.load("tsmeter.yaml")).summary()``.
        """
        return self._planner.plan(_desired(desired), prune=prune)

    def apply(
        self,
        desired: DesiredState | Mapping[str, Any] | Plan,
        *,
        prune: bool = False,
        on_step: Callable[[Step], object] | None = None,
    ) -> Plan:
        """Make the catalog match ``desired`` (or carry out a :meth:`plan`) and return the
        plan applied; the whole plan is checked before anything changes, and applying it
        again changes nothing. With ``prune``, metrics and thresholds not declared are
        deleted (a metric's records stay). Example, at a service's start-up:
        ``meter.apply({"metrics": [{"key": "api_calls", "aggregation_type": "count"}]})``.
        """
        plan = desired if isinstance(desired, Plan) else self.plan(desired, prune=prune)
        self._planner.apply(plan, on_step)
        return plan

    def _has_records(self, key: str, org_id: str | None) -> bool:
        return any(True for _ in self._queries.iter_usage(key, org_id=org_id, limit=1))

    # -- quotas, the monitor, alerts, events ------------------------------------------
    def check(
        self,
        metric_key: str,
        subject_type: str,
        subject_id: str,
        quantity: int | float | str | Decimal = 1,
        *,
        org_id: str | None = None,
    ) -> QuotaDecision:
        """Whether recording ``quantity`` more (for a COUNT metric: that many records) stays
        within the subject's BLOCK thresholds, from memory (see :mod:`tsmeter.limits.quotas`).

        Example: ``if not meter.check("api_calls", "org", "acme").allowed: ...``.
        """
        return self._quotas.check(metric_key, subject_type, subject_id, quantity, org_id=org_id)

    def evaluate_thresholds(self, now: TimeLike | None = None) -> EvaluationResult:
        """Compare every threshold with usage in its current window; open and resolve alerts
        (see :mod:`tsmeter.limits.monitor`). ``now`` defaults to the current time.

        Example: ``meter.evaluate_thresholds().exceeded``.
        """
        return self._monitor.evaluate_thresholds(now)

    def list_alerts(
        self,
        status: AlertStatus | str | None = None,
        *,
        metric_key: str | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
    ) -> list[UsageAlert]:
        """Alerts, newest first, optionally filtered. Example: ``meter.list_alerts("PENDING")``."""
        return self._alerts.list_alerts(
            status, metric_key=metric_key, subject_type=subject_type, subject_id=subject_id
        )

    def acknowledge_alert(self, alert_id: str) -> UsageAlert:
        """Mark an alert as seen (it stays open). Example: ``meter.acknowledge_alert(a.id)``."""
        return self._alerts.acknowledge_alert(alert_id)

    def resolve_alert(self, alert_id: str) -> UsageAlert:
        """Close an alert by hand: its level does not fire again in its window.

        Example: ``meter.resolve_alert(a.id)``.
        """
        return self._alerts.resolve_alert(alert_id)

    def list_events(
        self,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        *,
        name: str | None = None,
    ) -> list[MeteringEvent]:
        """Stored metering events in ``[start, end)``, oldest first; ``name`` keeps one kind
        (``threshold.exceeded``) or a family (``threshold``).

        Example: ``meter.list_events(name="threshold")``.
        """
        return self._event_log.list_events(start, end, name=name)

    # -- events and lifecycle ---------------------------------------------------------
    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        """Call ``handler`` for each event of ``event_type`` (``Event`` for all).

        Example: ``meter.subscribe(UsageRecorded, lambda e: print(e.record.id))``.
        Returns a function that unsubscribes.
        """
        return self.events.subscribe(event_type, handler)

    def on_close(self, hook: Callable[[], object]) -> None:
        """Call ``hook`` when the meter closes: after the outbox delivered, before the store
        closes (hooks run last-added first). Example: ``meter.on_close(mirror.shutdown)``."""
        self._close_hooks.append(hook)

    def __enter__(self: M) -> M:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the store. Without an outbox every record acknowledged so far is stored;
        with one, ``close`` delivers for up to ``close_timeout`` seconds and what remains
        stays in the outbox file for the next process on it."""
        if not self._closed:
            self._closed = True
            if self.outbox is not None:
                self.outbox.close(self.close_timeout)
            for hook in reversed(self._close_hooks):
                try:
                    hook()
                except Exception:
                    log.exception("a close hook of the meter failed")
            self.store.close()
            store: object = self.store
            if self.catalog is not store:  # one object for both ports: closed once
                self.catalog.close()


def _open_outbox(
    path: str,
    store: UsageStore,
    capabilities: Capabilities,
    sinks: RecordSinks,
    metric_of: Callable[[str, str | None], MetricDefinition],
    options: dict[str, Any],
) -> Outbox:
    """The durable outbox in front of ``store``: a store that takes a stream of parts gets the
    outbox's batches as one; one that answers a probe is asked before batches are unpacked.
    Batches an earlier version queued hold plain quantities: they are made units of their
    metric's precision on delivery (see :func:`legacy_units`)."""

    def deliver(rows: list[RecordRow]) -> None:
        store.append(rows, time.time_ns())

    stream = capabilities.stream
    probe = capabilities.probe
    return Outbox(path, deliver, after=sinks,
                  stream=stream.append_stream if stream is not None else None,
                  reachable=probe.reachable if probe is not None else None,
                  upgrade=partial(legacy_units, metric_of),
                  **options)  # fmt: skip


def legacy_units(
    metric_of: Callable[[str, str | None], MetricDefinition], rows: list[RecordRow]
) -> list[RecordRow]:
    """Rows an earlier version queued, their plain (float) quantities made units of each
    metric's precision: the float's shortest repr, rounded half to even where it has more
    places than the metric keeps (queued before precisions existed, such values are not
    refused). A row whose metric was deleted meanwhile takes the default precision; a value
    beyond the 64-bit range at its precision raises ValidationError, and the outbox
    quarantines that row with its original value (``tsmeter outbox``)."""
    out = []
    for row in rows:
        try:
            precision = metric_of(row.metric_key, row.org_id).precision
        except TsmeterError:
            precision = DEFAULT_PRECISION
        units = to_units("quantity", row.quantity, precision, Rounding.HALF_EVEN)
        out.append(row._replace(quantity=units))
    return out


def _desired(desired: DesiredState | Mapping[str, Any]) -> DesiredState:
    """A declaration given as a mapping, validated (a DesiredState is taken as it is)."""
    if isinstance(desired, DesiredState):
        return desired
    return DesiredState.from_document(desired)
