"""The ports: every capability the services use, as Protocols.

One port per concern. Adapters in ``tsmeter.adapters`` implement them; the
services (:mod:`tsmeter.metering`, :mod:`tsmeter.limits`) use nothing of an adapter that
is not declared here, and :mod:`tsmeter.bootstrap` is the only place that picks adapters.
What a store can do beyond :class:`UsageStore` (take a stream, answer a probe, be
administered, keep a state file) is not found by probing the object: bootstrap knows what it
built and hands the Meter a :class:`Capabilities` bundle.
Times are nanoseconds since the Unix epoch (UTC) throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol, runtime_checkable

from tsmeter.domain import (
    AlertStatus,
    MetricDefinition,
    PeriodType,
    RecordRow,
    UsageAlert,
    UsageThreshold,
)
from tsmeter.domain.corrections import CorrectionRequest, CorrectionRow
from tsmeter.domain.deliveries import Channel, Claimed, Delivery, DeliveryStatus
from tsmeter.domain.periods import Calendar

__all__ = [
    "AlertOpening",
    "AlertResolution",
    "ApiKeyRow",
    "Capabilities",
    "Catalog",
    "CorrectionQuery",
    "Dedupe",
    "DeliveryQueue",
    "DeliveryRow",
    "DimensionValues",
    "EventRow",
    "JobLeases",
    "KeyStore",
    "Probe",
    "RecordQuery",
    "RollupStats",
    "StoreAdmin",
    "StreamingStore",
    "SummaryQuery",
    "SummaryRow",
    "UsageStore",
]


@dataclass(frozen=True)
class RecordQuery:
    """Which raw records to read: one metric, optionally one subject, a time range."""

    metric_key: str
    org_id: str | None = None
    subject_type: str | None = None
    subject_id: str | None = None
    start: int | None = None
    end: int | None = None
    limit: int | None = None


@dataclass(frozen=True)
class SummaryQuery:
    """Which summaries to read: one metric and period type over ``[start, end)``."""

    metric_key: str
    period_type: PeriodType
    start: int
    end: int
    org_id: str | None = None
    subject_type: str | None = None
    subject_id: str | None = None


@dataclass(frozen=True)
class CorrectionQuery:
    """Which corrections to list: of one metric (``org_id`` its scope, None: the global
    metric) or, without ``metric_key``, of every metric (``org_id`` given: that org's);
    optionally of one record; ``start``/``end``: the corrected records' times (ns)."""

    metric_key: str | None = None
    org_id: str | None = None
    record_id: str | None = None
    start: int | None = None
    end: int | None = None

    def matches(self, row: CorrectionRow) -> bool:
        """Whether ``row`` is one this query asks for."""
        if self.metric_key is not None and (row.metric_key, row.org_id) != (
            self.metric_key,
            self.org_id,
        ):
            return False
        if self.metric_key is None and self.org_id is not None and row.org_id != self.org_id:
            return False
        return (
            (self.record_id is None or row.record_id == self.record_id)
            and (self.start is None or row.record_ts >= self.start)
            and (self.end is None or row.record_ts < self.end)
        )


class SummaryRow(NamedTuple):
    """The roll-up components of one series over one period (quantities in the metric's
    units, see :class:`~tsmeter.domain.RecordRow`)."""

    metric_key: str
    subject_type: str
    subject_id: str
    org_id: str | None
    period_start: int
    period_end: int
    record_count: int
    sum: int
    min: int
    max: int
    last_ts: int
    last_value: int


class EventRow(NamedTuple):
    """One metering event as stored: what happened, when, to which series; details in
    ``data`` (a JSON object)."""

    ts: int
    name: str
    metric_key: str
    subject_type: str
    subject_id: str
    org_id: str | None
    data: str


class DeliveryRow(NamedTuple):
    """A notification stored with the alert change that causes it, in the same transaction
    (``channel`` email or webhook; ``error`` set: recorded as failed, never attempted)."""

    id: str
    alert_id: str
    event: str
    channel: str
    target: str
    metric_key: str
    subject_type: str
    subject_id: str
    payload: str
    error: str | None = None


class AlertOpening(NamedTuple):
    """An alert to store in its window (ns), with the deliveries its opening queues (see
    :meth:`Catalog.open_alert_batch`)."""

    alert: UsageAlert
    window_start: int
    deliveries: Sequence[DeliveryRow] = ()


class AlertResolution(NamedTuple):
    """An alert the monitor resolves at ``at``, with the deliveries the resolution queues (see
    :meth:`Catalog.resolve_alert_batch`)."""

    alert_id: str
    at: datetime
    deliveries: Sequence[DeliveryRow] = ()


@dataclass(frozen=True)
class RollupStats:
    """What a roll-up run did."""

    summaries_written: int
    periods_recomputed: int
    records_seen: int
    range_start: int | None
    range_end: int | None


@runtime_checkable
class UsageStore(Protocol):
    """Where raw usage records and their summaries live."""

    def append(self, rows: Sequence[RecordRow], recorded_at: int) -> int:
        """Store rows whose id is new; return how many were new. Atomic per call."""
        ...

    def get_record(self, record_id: str) -> RecordRow | None:
        """The stored record with this id, or None."""
        ...

    def iter_records(self, query: RecordQuery) -> Iterator[RecordRow]:
        """Records matching ``query`` ordered by time, streamed."""
        ...

    def count_records(self, query: RecordQuery) -> int | None:
        """How many records match ``query`` (its limit ignored), or None where the store
        cannot tell without reading them; for progress, so it may be a moment out of date."""
        ...

    def readings_before(
        self, query: RecordQuery, at: int, dimensions: Sequence[str]
    ) -> list[RecordRow]:
        """For each series matching ``query`` (its metric, org and subject filters; its range
        and limit ignored) and each combination of the values of ``dimensions`` in the
        records' metadata (see :func:`~tsmeter.domain.properties.dimension_values`; a
        record without one has None for it): the latest record before ``at`` (of records
        with one time, the greatest id). The reading a time-weighted sum carries into a
        period starting at ``at`` (:mod:`tsmeter.metering.measures`)."""
        ...

    def rollup(
        self,
        period: PeriodType,
        calendar: Calendar,
        start: int | None = None,
        end: int | None = None,
    ) -> RollupStats:
        """Bring summaries of ``period`` up to date.

        Without a range: every period touched by records stored since the last
        run (late records included). With a range: recompute every period that
        overlaps it. Re-running gives identical summaries.
        """
        ...

    def summaries(self, query: SummaryQuery, calendar: Calendar) -> list[SummaryRow]:
        """Fresh summaries over the query's range: stored ones where no record arrived since
        they were computed, computed from raw records where one did."""
        ...

    def purge_metric(self, metric_key: str, org_id: str | None) -> int:
        """Delete every record and summary of a metric; return the records deleted."""
        ...

    def correct(self, request: CorrectionRequest, not_before: int) -> tuple[CorrectionRow, bool]:
        """Apply a correction to a stored record, in one call: keep its audit row, cancel
        (the record no longer counts; its id stays known, so recording it again counts
        nothing) or amend (its quantity becomes ``request.units``), and mark the record's
        periods for recomputation as a late record does. Returns the audit row and whether
        this call applied it: ``(row, False)`` when ``request.id`` was applied before (the row
        kept then), or for a cancel of a record cancelled before (that cancel's row).
        NotFoundError for an id never stored; ConflictError for amending a cancelled record;
        ValidationError naming ``recordId`` for a record timed before ``not_before`` (ns).
        """
        ...

    def list_corrections(self, query: CorrectionQuery) -> list[CorrectionRow]:
        """The corrections ``query`` asks for, oldest first (by ``corrected_at``, then id)."""
        ...

    def append_events(self, events: Sequence[EventRow]) -> None:
        """Store metering events (threshold crossings, aggregation runs)."""
        ...

    def list_events(
        self, start: int | None = None, end: int | None = None, name: str | None = None
    ) -> list[EventRow]:
        """Events in ``[start, end)`` (optionally of one name, or names starting with
        ``name`` + "."), oldest first."""
        ...

    def close(self) -> None:
        """Release connections; everything acknowledged stays stored."""
        ...

    @property
    def recheck_window(self) -> int:
        """How far back (ns) an incremental roll-up re-reads what changed: 0 where every
        writer shares the store's clock, more where writers' clocks may differ."""
        ...


@runtime_checkable
class Catalog(Protocol):
    """Metric definitions and thresholds (the state store)."""

    def add_metric(self, metric: MetricDefinition) -> None:
        """Store a new metric; ConflictError if its key exists in its org scope."""
        ...

    def replace_metric(self, metric: MetricDefinition) -> None:
        """Overwrite a stored metric (same id)."""
        ...

    def remove_metric(self, metric_id: str) -> None:
        """Delete a metric definition by id."""
        ...

    def find_metric(self, key: str, org_id: str | None) -> MetricDefinition | None:
        """The metric with this key in exactly this org scope (None = global)."""
        ...

    def list_metrics(self) -> list[MetricDefinition]:
        """Every metric, global and org-scoped, ordered by org then key."""
        ...

    def add_threshold(self, threshold: UsageThreshold) -> None:
        """Store a new threshold."""
        ...

    def replace_threshold(self, threshold: UsageThreshold) -> None:
        """Overwrite a stored threshold (same id)."""
        ...

    def remove_threshold(self, threshold_id: str) -> bool:
        """Delete a threshold; False if there was none."""
        ...

    def get_threshold(self, threshold_id: str) -> UsageThreshold | None:
        """The threshold with this id, or None."""
        ...

    def list_thresholds(self) -> list[UsageThreshold]:
        """Every threshold."""
        ...

    def open_alert(
        self, alert: UsageAlert, window_start: int, deliveries: Sequence[DeliveryRow] = ()
    ) -> bool:
        """Store a new PENDING alert unless its (threshold, subject, window, level) has an
        open alert, or one resolved by hand; return whether it was stored. ``deliveries``
        are queued (pending) in the same transaction, only if the alert is stored."""
        ...

    def set_alert_status(
        self,
        alert_id: str,
        status: AlertStatus,
        at: datetime,
        *,
        automatic: bool = False,
        deliveries: Sequence[DeliveryRow] = (),
    ) -> UsageAlert | None:
        """Acknowledge or resolve an alert (``automatic``: resolved by the monitor); the
        updated alert, or None if there is none. ``deliveries`` are queued in the same
        transaction, only if the alert exists."""
        ...

    def open_alert_batch(self, openings: Sequence[AlertOpening]) -> list[bool]:
        """:meth:`open_alert` for each of ``openings`` (in order, so of two with one key only
        the first is stored), all in one transaction; whether each was stored. The monitor
        opens a threshold's alerts of one window with it."""
        ...

    def resolve_alert_batch(
        self, resolutions: Sequence[AlertResolution]
    ) -> list[UsageAlert | None]:
        """Resolve each alert that is still open (as the monitor, ``automatic``), queueing its
        deliveries, all in one transaction; the resolved alert for each, or None where there
        is no such alert or it was resolved already (nothing is queued for it)."""
        ...

    def open_alerts(self, threshold_id: str, window_start: int) -> list[UsageAlert]:
        """The alerts of a threshold and window that are not resolved."""
        ...

    def get_alert(self, alert_id: str) -> UsageAlert | None:
        """The alert with this id, or None."""
        ...

    def list_alerts(self, status: AlertStatus | None = None) -> list[UsageAlert]:
        """Alerts (optionally of one status), newest first."""
        ...

    def close(self) -> None:
        """Release the state store (the Meter calls it once, unless it is the usage store)."""
        ...


class StreamingStore(Protocol):
    """A store that takes many parts in one call, so its writes do not pause between them
    (the outbox hands it every due batch as one stream; ``record_batch`` its rows)."""

    def append_stream(
        self,
        parts: Iterable[Sequence[RecordRow]],
        stored: Callable[[int], None] | None = None,
    ) -> int:
        """Store the rows of ``parts`` whose id is new (taken as needed); return how many were
        new. ``stored(n)`` is called, with ``n`` growing, once the first ``n`` rows taken
        are known to be stored."""
        ...


class Probe(Protocol):
    """A store on the other side of a network, which can say whether it answers at all."""

    def reachable(self) -> bool:
        """Whether the server answers now (within about a second); never raises."""
        ...


class StoreAdmin(Protocol):
    """A store that can be set up from the CLI (``tsmeter influx``)."""

    def init(self) -> str:
        """Create the database (or bucket) if it is missing; return what is ready, as
        ``"Database 'metering'"``. Safe to run again."""
        ...

    def install_rollups(
        self,
        timezone: str,
        metrics: Sequence[MetricDefinition],
        *,
        every: str,
        lateness: str,
        offset: str,
    ) -> list[str]:
        """Keep summaries up to date inside the server (continuous queries or tasks, created
        or replaced by name); one line per thing installed, as ``"task 'x' installed"``."""
        ...

    def convert(self, metrics: Sequence[MetricDefinition]) -> list[str]:
        """Give stored quantities of earlier versions (floats) integer units at the precision
        of their metric in ``metrics`` (the catalog), then recompute the summaries over them;
        one line per finding, as ``"12 points converted ..."``. Safe to run again."""
        ...


class Dedupe(Protocol):
    """Which record ids were sent to a store, and where: the InfluxDB store asks it before a
    write, since the server cannot look an id up cheaply.

    An entry comes before the write it describes (a write that never landed is found and
    redone by a retry): ``claim`` for ids the store found unknown, atomically, so that of
    writers racing with one id exactly one gets it; ``take_over`` for an id whose point was
    not found, unless another writer may still be writing it; ``add`` replaces a location
    unconditionally. Implementations:
    :class:`tsmeter.adapters.sqlite.dedupe.SQLiteDedupe` (one host's processes) and
    :class:`tsmeter.adapters.postgres.dedupe.PostgresDedupe` (a fleet's hosts); the suite in
    ``tests/contract/test_dedupe.py`` runs against each.
    """

    #: whether writers on several hosts may use it at once with no lock in common (its
    #: ``claim`` is atomic across them); else the store serialises its writers on one host
    shared: bool

    def known(self, ids: Iterable[str]) -> dict[str, RecordRow]:
        """Where each known id of ``ids`` was sent: a row with its id, series and time (the
        quantity, metadata and source are not kept); unknown ids are left out."""
        ...

    def claim(self, rows: Sequence[RecordRow], writer: str) -> dict[str, RecordRow]:
        """Remember each row's id at its series and time, entered by ``writer`` (the host
        about to write its point), if the id is not known, atomically; return, for the ids
        known already (another writer claimed them first), where they were sent, as
        ``known`` does. Of an id twice in ``rows``, the first row counts. An implementation
        for one host's writers, whose store serialises its lookups and entries, may enter
        every id."""
        ...

    def take_over(
        self, rows: Sequence[RecordRow], writer: str, after_s: float
    ) -> dict[str, RecordRow]:
        """Move ids whose point was not found where they were sent to the rows' locations,
        for ``writer``: those that ``writer`` entered itself (its host's writes are
        serialised) or that were entered more than ``after_s`` seconds ago (a write ends
        within that time, landed or failed), atomically; return the others, where they
        are: another writer's write of them may still be on its way. An implementation
        for one host's writers may move every id."""
        ...

    def add(self, rows: Sequence[RecordRow]) -> None:
        """Remember that ``rows`` are being sent, each id at its series and time (replacing
        where it was sent before; of an id twice in ``rows``, the last row counts)."""
        ...

    def forget_series(self, metric_key: str, org_id: str | None) -> None:
        """Forget every id sent to a metric of one org scope (the metric was purged)."""
        ...

    def close(self) -> None:
        """Release it; what was added stays known to the next one opened on the same place."""
        ...


class JobLeases(Protocol):
    """A fleet-wide leader lease for the scheduler, and once-per-period run claims.

    Times are the lease store's own clock (the database's for PostgreSQL), never a host's.
    The guarantee: at most one holder holds the lease at a time; a holder that stops renewing
    loses it ``ttl_s`` after its last successful :meth:`acquire`. :meth:`claim_run` succeeds for
    exactly one holder per (job, period), except that a claim whose holder lost its lease
    before :meth:`finish_run` may be claimed again (the run may then happen twice: jobs must
    be idempotent, as aggregation is).

    Example: ``if leases.acquire("host-a:412", 30.0): ...``.
    """

    def acquire(self, holder: str, ttl_s: float) -> bool:
        """Take the lease if it is free or expired, or renew it if ``holder`` holds it, until
        ``ttl_s`` seconds from now; True while ``holder`` holds it."""
        ...

    def release(self, holder: str) -> None:
        """Give the lease up now if ``holder`` holds it (another may take it at once)."""
        ...

    def claim_run(self, job: str, period_start_ns: int, holder: str) -> bool:
        """Claim the run of ``job`` for the period starting at ``period_start_ns``; True only
        if ``holder`` holds the lease and no other holder claimed the period (unless that
        holder lost its lease without finishing)."""
        ...

    def finish_run(self, job: str, period_start_ns: int, holder: str, *, ok: bool) -> None:
        """Mark ``holder``'s claimed run finished (``ok``: it succeeded); a finished period is
        never claimed again."""
        ...


class DeliveryQueue(Protocol):
    """The queue of notification deliveries the monitor fills (with the alert change, see
    :meth:`Catalog.open_alert`) and the notifier's workers drain: one row per (alert, event,
    channel, target). A delivery is *claimed* for a lease before it is attempted, so two
    workers never send it at once, and one whose worker died is attempted again once the
    lease has run out.

    Implementations: :class:`tsmeter.integrations.notify.log.DeliveryLog` (the SQLite state
    file, one host), ``tsmeter.adapters.postgres.deliveries.PostgresDeliveryLog`` (a fleet);
    the suite in ``tests/contract/test_delivery_queue.py`` runs against each. Times are ns.
    """

    def enqueue(self, items: Sequence[DeliveryRow], now: int) -> int:
        """Add the deliveries not queued yet (by alert, event, channel, target; one with
        ``error`` is recorded as failed); return how many were new."""
        ...

    def claim_due(
        self, now: int, clock: int, lease: int, limit: int, channels: Sequence[Channel]
    ) -> list[Claimed]:
        """Claim up to ``limit`` pending deliveries on ``channels`` due at ``now`` and not
        claimed by a live lease, for ``lease`` ns, oldest due first. ``clock`` is the caller's
        real time; a queue shared by hosts may measure leases on its own clock instead."""
        ...

    def count_due(self, now: int, channel: Channel) -> int:
        """How many pending deliveries on ``channel`` are due at ``now``."""
        ...

    def finish(
        self,
        delivery_id: str,
        status: DeliveryStatus,
        now: int,
        *,
        error: str | None = None,
        next_attempt_at: int | None = None,
    ) -> None:
        """Record one attempt's outcome (``next_attempt_at``: when a pending one is due
        again) and release the claim."""
        ...

    def requeue_failed(self, now: int, ids: Sequence[str] | None = None) -> int:
        """Make failed deliveries (all, or those in ``ids``) pending again, due at ``now``,
        with a fresh attempt count; return how many."""
        ...

    def next_due(self, channels: Sequence[Channel]) -> int | None:
        """When the earliest pending delivery on ``channels`` can be attempted (its due time,
        or the end of its claim if later), or None."""
        ...

    def entries(
        self, status: DeliveryStatus | str | None = None, limit: int | None = None
    ) -> list[Delivery]:
        """Deliveries, oldest first; only those with ``status`` if given (ValidationError
        naming ``status`` for an unknown one)."""
        ...

    def close(self) -> None:
        """Release it (idempotent); what was queued stays queued."""
        ...


class ApiKeyRow(NamedTuple):
    """An API key as the state store keeps it: never the key itself, only its SHA-256
    (``secret_hash``); ``scopes`` comma-separated (``"ingest,read"``); times in ns."""

    id: str
    name: str
    scopes: str
    secret_hash: bytes
    created_at: int
    revoked_at: int | None = None


class KeyStore(Protocol):
    """The API keys of the HTTP API, in the state store (the SQLite state file, or the
    fleet's PostgreSQL, so every server of a fleet accepts the same keys). It keeps rows;
    hashing and checking keys is :class:`tsmeter.access.ApiKeys`'s work. Implementations:
    :class:`tsmeter.adapters.sqlite.SQLiteStore`,
    ``tsmeter.adapters.postgres.keys.PostgresKeys``; the suite in
    ``tests/contract/test_key_store.py`` runs against each."""

    def add_key(self, row: ApiKeyRow) -> None:
        """Store a new key; ConflictError if its id exists."""
        ...

    def get_key(self, key_id: str) -> ApiKeyRow | None:
        """The key with this id (revoked or not), or None."""
        ...

    def list_keys(self) -> list[ApiKeyRow]:
        """Every key, revoked ones too, oldest first."""
        ...

    def revoke_key(self, key_id: str, at: int) -> ApiKeyRow | None:
        """Mark the key revoked at ``at`` (a key revoked before keeps its first time); the
        key as stored now, or None if there is none."""
        ...


class DimensionValues(Protocol):
    """The distinct values each open dimension of each metric has taken, fleet-wide, in the
    state store (the SQLite state file, or the fleet's PostgreSQL): what bounds a dimension's
    cardinality (its ``max_values``) for every process and host at once. Values are only
    ever added. Implementations: :class:`tsmeter.adapters.sqlite.SQLiteStore`,
    ``tsmeter.adapters.postgres.dimensions.PostgresDimensionValues``; the suite in
    ``tests/contract/test_dimension_values.py`` runs against each."""

    def admit(self, metric_id: str, name: str, values: Collection[str], limit: int) -> set[str]:
        """Admit ``values`` of dimension ``name`` of metric ``metric_id``, atomically: if the
        known values plus the new ones are at most ``limit``, every one is kept and the
        answer is empty; else none is kept and the answer is the values that are not known
        (the ones refused). Two callers racing for the last free value never both win."""
        ...

    def known(self, metric_id: str, name: str) -> set[str]:
        """The values of dimension ``name`` of metric ``metric_id`` admitted so far."""
        ...


@dataclass(frozen=True)
class Capabilities:
    """What the store behind a Meter can do beyond :class:`UsageStore`, as bootstrap wired it;
    None where it cannot. ``state_path`` is the SQLite file of the state store (the catalog),
    beside which the notification log and the PostHog journal live. ``deliveries``: the queue
    the catalog's alerts put their notifications in, where it is not a table of the
    ``state_path`` file (a fleet's PostgreSQL state); None means that file's delivery log.

    Example: ``Meter(store, store, capabilities=Capabilities(state_path="usage.db"))``.
    """

    stream: StreamingStore | None = None
    probe: Probe | None = None
    admin: StoreAdmin | None = None
    state_path: str | None = None
    deliveries: DeliveryQueue | None = None
    leases: JobLeases | None = None
    #: where the HTTP API's keys are kept (the state store); None: no keys can be made
    keys: KeyStore | None = None
    #: the distinct values of metrics' open dimensions, fleet-wide (the state store); None:
    #: they are kept in this process only
    dimension_values: DimensionValues | None = None
