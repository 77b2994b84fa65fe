"""InfluxStore: the UsageStore port on InfluxDB, over a v1 or a v2 transport.

One store, two transports (:class:`~tsmeter.adapters.influxdb.transport.Transport`): the v1
API (:mod:`~tsmeter.adapters.influxdb.v1`: 1.x, 2.x compat, 3.x, InfluxQL) and InfluxDB 2.x
through influxdb-client and Flux (:mod:`~tsmeter.adapters.influxdb.v2`). The store holds what
they share: the point schema, the exactly-once write path and the metering events; a
transport sends bytes and answers the reads, each in its own query language.

Exactly once, without a local database:

* **No collapse.** InfluxDB merges points with equal measurement, tag set and
  time. Before a batch is written, the store reads the points already stored
  in the batch's metrics and time range; a record whose exact time is taken in
  its series moves to a free nanosecond of the same microsecond (then to an
  extra tag ``c``), keeps its exact time in field ``tsn``, and its microsecond
  is marked in ``usage_collisions`` (:mod:`~tsmeter.adapters.influxdb.placement`).
  Writers on one host take a file lock around
  read-and-write; writers on different hosts differ in tag ``w``. So 10,000
  records with one timestamp, from two processes at once, are 10,000 points.
* **Idempotent.** The same read finds record ids that are stored already, so a
  retried record (same series and time) never adds a second point, whichever host
  sends it. A record id re-sent with another time or subject is found through the
  dedupe port (:class:`~tsmeter.ports.Dedupe`; on one host the SQLite id ledger, in a
  fleet PostgreSQL): exact for everything its implementation has seen; beyond it only the
  same-series, same-time retry is caught. Hosts sharing it are not serialised: a chunk's
  new ids are claimed there before its write, and an id another host claimed first (the
  same record sent through both at once) is left to it (see ``append_stream``).
* **Reads proportional to what is new.** A writer's slots outlive the call where they cover
  every point a row could meet (a shared ledger, or no other writer in the database): a
  later call reads only the time ranges its slots do not cover yet, so a backfill spread
  over a month reads each range once, not once per window (``placement.Coverage``; see
  ``append_stream``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from tsmeter.adapters.influxdb import corrections, placement
from tsmeter.adapters.influxdb.lineprotocol import UsageEncoder, encode_point
from tsmeter.adapters.influxdb.schema import (
    COLLISIONS,
    DIRTY,
    EVENTS,
    RAW,
    THRESHOLD_WINDOWS,
    SeriesKey,
    complete,
    row_of,
    series_key_of,
)
from tsmeter.adapters.influxdb.transport import Conversion, Points, Transport
from tsmeter.domain import MetricDefinition, PeriodType, RecordRow
from tsmeter.domain.corrections import CorrectionRequest, CorrectionRow
from tsmeter.domain.periods import Calendar
from tsmeter.domain.quantities import DEFAULT_PRECISION
from tsmeter.domain.validation import to_ns
from tsmeter.errors import StorageUnavailableError, TsmeterError
from tsmeter.files import open_private
from tsmeter.ports import (
    Capabilities,
    CorrectionQuery,
    Dedupe,
    EventRow,
    RecordQuery,
    RollupStats,
    SummaryQuery,
    SummaryRow,
)

__all__ = ["InfluxStore"]

# a RecordRow's id
_ID = itemgetter(0)
_Points = Points


class InfluxStore:
    """Usage records and summaries in one InfluxDB database or bucket, over a transport (see
    the module docstring).

    Example: ``InfluxStore.from_url("influxdb://127.0.0.1:8086/metering", ledger="state.db")``.
    """

    #: points per write request; the next request is encoded while the server takes one
    WRITE_CHUNK = 10_000
    #: write requests in flight at once (the server takes two faster than one)
    WRITERS = 2
    #: encoded chunks waiting for a writer, so that the next request starts the moment one
    #: is answered, whatever the calling thread is busy with
    QUEUED = 2
    #: records per existence read (the server's cost is mostly per query, not per point;
    #: a call of a few windows still overlaps reading with writing)
    READ_CHUNK = 50_000
    #: records in a call's first window (the next ones grow fourfold up to READ_CHUNK): the
    #: first write waits only for this many to be checked, placed, entered and encoded
    FIRST_WINDOW = 2_000
    #: windows of READ_CHUNK whose existence read runs ahead of the one being written
    READ_AHEAD = 1
    #: (metric, org) pairs an existence read names; beyond, it reads every point of the span
    METRICS_PER_QUERY = 20
    #: seconds a call waits for the points of ids another host claimed first (its writes in
    #: flight land within a request's time) before it fails and leaves them to a retry
    LANDING_WAIT = 10.0
    #: seconds after which another host's write of an id has ended, landed or failed: more
    #: than a request with its retries takes (30 s and 3 retries by default), queue included
    IN_FLIGHT_S = 300.0
    #: incremental roll-ups re-read nothing they processed: the change log's ledger names it
    #: (``changelog``), whatever the writers' clocks
    recheck_window = 0
    #: slots (and ids found stored) kept between calls, about 100 bytes each; beyond, the
    #: oldest are forgotten and their ranges read again when a row reaches them
    KEPT_SLOTS = 500_000

    def __init__(self, transport: Transport, dedupe: Dedupe) -> None:
        self.transport = transport
        self.dedupe = dedupe
        self.writer = transport.writer or socket.gethostname() or "tsmeter"
        self.encoder = UsageEncoder(RAW, writer=self.writer)
        self._lock = threading.Lock()
        # the processes of a host serialise their lookups, entries and writes; those of
        # other writers (tag w) only where the dedupe port cannot settle races by itself
        name = transport.lock_name + (f"\n{self.writer}" if dedupe.shared else "")
        ident = hashlib.sha1(name.encode()).hexdigest()[:16]
        self._lock_path = os.path.join(tempfile.gettempdir(), f"tsmeter-influx-{ident}.lock")
        self._recent: dict[str, RecordRow] = {}  # ids found stored: the record
        self._seen: dict[str, RecordRow] = {}  # ids found stored by the write path: the slot
        self._pool: ThreadPoolExecutor | None = None
        self._write_pool: ThreadPoolExecutor | None = None
        self._log_clock = 0
        # slots kept between calls, with the ranges they cover (see ``append_stream``), on a
        # transport whose reads return whole (metric, org) pairs
        self._keeps = transport.reads_pairs
        self._occupied = placement.Slots()
        self._cursor: dict[tuple[SeriesKey, int], int] = {}
        self._coverage = placement.Coverage()
        self._standins: dict[SeriesKey, tuple[Any, ...]] = {}
        # where the reads found stored points, by record id: an id the ledger does not know
        # (written before it, or elsewhere) is read there again when it comes back, as the
        # read of its window would have found it
        self._found: dict[str, RecordRow] = {}
        # what this store last wrote into the lock file: another stamp there means another
        # store under the same lock wrote since
        self._stamp = b""
        self._calls = 0
        self._find_metric: Callable[[str, str | None], MetricDefinition | None] | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ledger: str = ":memory:",
        dedupe: Callable[[str], Dedupe] | None = None,
    ) -> InfluxStore:
        """A store for an ``influxdb://`` (the v1 API) or ``influxdb2://`` (InfluxDB 2.x) URL
        (see InfluxV1Config and InfluxV2Config), keeping its id ledger in the SQLite file
        ``ledger``, or in what ``dedupe`` makes for the store's target (a fleet's shared
        ledger). Example: ``InfluxStore.from_url("influxdb://127.0.0.1:8086/metering")``."""
        from tsmeter.adapters.sqlite.dedupe import SQLiteDedupe

        transport: Transport
        if url.startswith("influxdb2://"):
            from tsmeter.adapters.influxdb.v2 import V2Transport

            transport = V2Transport.from_url(url)
        else:
            from tsmeter.adapters.influxdb.v1 import V1Transport

            transport = V1Transport.from_url(url)
        try:
            made = dedupe(transport.target) if dedupe else SQLiteDedupe(ledger, transport.target)
            return cls(transport, made)
        except BaseException:
            transport.close()
            raise

    def close(self) -> None:
        """Close the transport and the dedupe port (every acknowledged write is on the
        server)."""
        for pool in (self._pool, self._write_pool):
            if pool is not None:
                pool.shutdown()
        self.transport.close()
        self.dedupe.close()

    def reachable(self) -> bool:
        """Whether the server answers a ping within a second (the outbox asks, to know
        whether to hold its batches in memory for delivery)."""
        return self.transport.ping(timeout=1.0)

    def capabilities(self) -> Capabilities:
        """What this store offers beyond the UsageStore port: a stream of parts, a probe where
        its transport can ping, and administration. Example:
        ``Meter(store, catalog, capabilities=store.capabilities())``."""
        return Capabilities(
            stream=self, probe=self if self.transport.can_ping else None, admin=self
        )

    # -- administration ---------------------------------------------------------------
    def init(self) -> str:
        """Create the database (2.x: the bucket) if it is missing (``tsmeter influx init``)."""
        return self.transport.init()

    def install_rollups(
        self,
        timezone: str,
        metrics: Sequence[MetricDefinition],
        *,
        every: str,
        lateness: str,
        offset: str,
    ) -> list[str]:
        """Continuous queries (1.x) or Flux tasks (2.x) that keep summaries up to date
        (``tsmeter influx install-rollups``)."""
        return self.transport.install_rollups(
            timezone, metrics, every=every, lateness=lateness, offset=offset
        )

    def know_metrics(self, metrics: Iterable[MetricDefinition]) -> None:
        """Tell the store the precision and the dimensions of ``metrics``: raw reads give
        points written by an earlier version (float quantity, not converted yet) their units
        as ``tsmeter influx convert`` will (half to even; without it such a point is an error
        naming the command), and the rows of a metric with dimensions are written with them
        as tags ``dim.<name>`` (see :func:`~tsmeter.adapters.influxdb.lineprotocol.dimension_tags`).
        """
        for m in metrics:
            self.transport.precisions[(m.key, m.org_id)] = m.precision
            self.encoder.know(m.key, m.org_id, m.dimension_names)

    def look_up_metrics(self, find: Callable[[str, str | None], MetricDefinition | None]) -> None:
        """Where to look up a metric the store was not told about (``find(key, org)``, the
        catalog's ``find_metric``): before rows of a metric it does not know are written,
        the store asks, so a metric defined after it opened (here or by another process)
        has its dimensions as tags from its first record on. A metric not found is asked for
        again at the next write of its rows."""
        self._find_metric = find

    def _learn(self, rows: list[RecordRow]) -> None:
        """Look up the metrics of ``rows`` that the encoder does not know (see
        :meth:`look_up_metrics`); one (metric, org) pair set per window, from C."""
        find = self._find_metric
        if find is None:
            return
        knows = self.encoder.knows
        for metric_key, org_id in {(m, o) for m, o, _ in placement.hours(rows)}:
            if not knows(metric_key, org_id):
                metric = find(metric_key, org_id)
                if metric is not None:
                    self.know_metrics([metric])

    def convert(self, metrics: Sequence[MetricDefinition]) -> list[str]:
        """Give the raw points of earlier versions integer units (``tsmeter influx
        convert``): see :meth:`convert_units`; one line per finding."""
        done = self.convert_units(metrics)
        lines = [
            f"{done.converted} points converted to integer units,"
            f" {done.rounded} of them rounded half to even to their metric's precision"
        ]
        for metric, org in sorted(done.unknown, key=lambda k: (k[0], k[1] or "")):
            scope = f" (org {org!r})" if org else ""
            lines.append(f"metric {metric!r}{scope} is not in the catalog: converted at the"
                         f" default precision {DEFAULT_PRECISION}")  # fmt: skip
        if done.range is not None:
            lines.append("summaries recomputed over the converted range")
        return lines

    def convert_units(self, metrics: Sequence[MetricDefinition]) -> Conversion:
        """Write integer ``units`` onto every raw point of an earlier version (float
        ``quantity``, no ``units``): same measurement, tags and time, so InfluxDB merges the
        field into the point. Each value is rounded half to even from the float's shortest
        repr to the precision of its metric in ``metrics`` (the catalog; a metric not there
        gets DEFAULT_PRECISION and is reported). Then marks the database converted (roll-ups
        refuse to run before) and recomputes the stored summaries over the converted range.
        Safe to run again: converted points are skipped."""
        precisions = {(m.key, m.org_id): m.precision for m in metrics}
        self.transport.precisions.update(precisions)
        with self._exclusive():
            done = self.transport.convert(precisions, DEFAULT_PRECISION)
            self.transport.mark_converted(done, time.time_ns())
        if done.range is not None:
            lo, hi = done.range
            top: dict[str, PeriodType] = {}
            order = list(PeriodType)
            for period, zone in self.transport.summary_kinds():
                if zone not in top or order.index(period) > order.index(top[zone]):
                    top[zone] = period
            for zone, period in sorted(top.items()):  # lower periods are recomputed first
                self.transport.rollup(period, Calendar(zone), lo, hi)
        return done

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialise read-then-write among the threads and processes of this host. The lock
        file holds the stamp of the last store that wrote under it: a store that finds
        another stamp than its own forgets the slots it kept (another process of the host
        that shares the lock may have taken some since)."""
        with self._lock, open_private(self._lock_path) as handle:
            fd = handle.fileno()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if self._keeps:
                    with open(self._lock_path, "rb") as current:
                        if current.read(64) != self._stamp:
                            self._forget_slots()
                yield
            finally:
                try:
                    if self._keeps:
                        self._calls += 1
                        self._stamp = f"{os.getpid()}:{id(self)}:{self._calls}".encode()
                        os.ftruncate(fd, 0)
                        os.write(fd, self._stamp)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def _alone(self) -> bool:
        """Whether a shared ledger settles every host's ids, or this writer is the only one
        whose points the database holds (asked again at each call): only then do the ranges
        kept cover every point a row could be a retry of."""
        if self.dedupe.shared:
            return True
        try:
            writers = self.transport.writers()
        except TsmeterError:
            return False
        return writers is not None and writers <= {self.writer}

    def _forget_slots(self) -> None:
        """Drop the slots kept between calls and the ranges they cover."""
        self._occupied = placement.Slots()
        self._cursor = {}
        self._coverage.clear()
        self._standins.clear()
        self._found.clear()

    # -- writing ----------------------------------------------------------------------
    def append(self, rows: Sequence[RecordRow], recorded_at: int) -> int:
        """Write rows whose id is not stored yet; return how many were new (see
        ``append_stream``)."""
        return self.append_stream([rows if type(rows) is list else list(rows)])

    def append_stream(
        self,
        parts: Iterable[Sequence[RecordRow]],
        stored: Callable[[int], None] | None = None,
    ) -> int:
        """Write the rows of ``parts`` (taken from the iterable as they are needed) whose id
        is not stored yet and did not come earlier in the call; return how many were new.
        ``stored(n)`` is called each time the first ``n`` rows taken from ``parts`` are
        known to be stored (or found stored before), with ``n`` growing.

        Rows are checked against the server in windows (``placement.Windows``: from
        FIRST_WINDOW records, growing to READ_CHUNK; the next window's read runs ahead) and go
        in chunks of WRITE_CHUNK, up to WRITERS write requests in flight and QUEUED more
        encoded and waiting: while the server takes a chunk, the next ones are placed and
        encoded. Each chunk enters the id ledger before it is placed and queued (a failed
        write is found and redone by a retry; see ``_enter``), with the change log and
        collision marks in front of its points (a mark without points only costs a
        recomputation). Ids another host entered first are not written here; they count as
        stored once their points are read where that host sent them (see ``_landed``).
        Returns once every chunk is stored; on a failure, sends nothing more and raises after
        the requests in flight were answered.

        Slots no later row can reach are forgotten as the call goes (``placement.prune``).
        When the rows are one list, the first microsecond of the rest is known; a stream
        may bring a window whose rows reach back before slots already forgotten: that
        window waits for the writes in flight and is read again, so the read finds them.

        On the v1 API, the store keeps its slots between calls instead, up to KEPT_SLOTS,
        with the ranges they cover (``placement.Coverage``), while they cover every point a
        row could meet (``_alone``: a shared ledger, whose ids every host's lookups see, or
        no other writer's records in the database, asked at each call): a window reads only
        its rows outside those ranges, and the points of ids that earlier reads found stored
        (``_found_again``). The slots are dropped when another process of the host wrote in
        between (see ``_exclusive``), when a call fails, and when another writer appears.
        """
        windows = placement.Windows(parts, min(self.FIRST_WINDOW, self.READ_CHUNK),
                                    self.READ_CHUNK)  # fmt: skip
        written = 0
        pending: deque[Future[None]] = deque()
        # window, first µs, its reads, and how many windows were in the ledger as they began
        reading: deque[tuple[list[RecordRow], int, _Lookup, int]] = deque()
        occupied = placement.Slots()
        cursor: dict[tuple[SeriesKey, int], int] = {}
        seen = placement.CallIds()  # the call's ids that the next windows' reads may miss
        entered: deque[tuple[int, int]] = deque()  # (window number, requests through it)
        added = 0  # windows whose rows are all in the ledger
        forgotten: int | None = None  # slots before this microsecond may have been forgotten
        taken = sent = 0  # rows taken from ``parts``; write requests answered, in order
        # (requests through a window, rows through it, whether another host took some of its
        # ids first: no progress is reported from there until their points are seen)
        marks: deque[tuple[int, int, bool]] = deque()
        elsewhere: dict[str, RecordRow] = {}  # ids another host claimed first: where

        failed = threading.Event()
        # the rows of each request in ``pending``; rows known stored: found stored before, or
        # in a request that was answered with success
        unconfirmed: deque[list[RecordRow]] = deque()
        known = 0

        def confirm() -> None:  # wait for the oldest request; its rows stay unconfirmed if it fails
            nonlocal sent, known
            pending[0].result()
            pending.popleft()
            known += len(unconfirmed.popleft())
            sent += 1

        def send(body: bytes) -> None:  # on a writer: nothing more once a request failed
            if not failed.is_set():
                try:
                    self.transport.write(body)
                except BaseException:
                    failed.set()
                    raise

        def settle() -> None:  # tell ``stored`` about the windows whose requests all answered
            upto = None
            while marks and marks[0][0] <= sent and not marks[0][2]:
                upto = marks.popleft()[1]
            if upto is not None and stored is not None:
                stored(upto)

        error: StorageUnavailableError | None = None
        completed = False
        with self._exclusive():
            coverage: placement.Coverage | None = None
            if self._keeps:
                alone = self._alone()
                held = len(self._occupied.first) + len(self._occupied.more) + len(self._found)
                if held > self.KEPT_SLOTS or not alone:
                    self._forget_slots()
                if alone:
                    occupied, cursor, coverage = self._occupied, self._cursor, self._coverage
            try:
                window = next(windows, None)
                if window is None:
                    completed = True
                    return 0
                reading.append((window, placement.Windows.low(window),
                                self._lookup(window, coverage), 0))  # fmt: skip
                later = False  # past the first window
                while reading:
                    window, low, lookup, visible = reading.popleft()
                    # the reads of the next windows overlap this one's work (their ids differ
                    # from this call's earlier ones; what this call wrote is in ``occupied``)
                    while len(reading) < self.READ_AHEAD:
                        ahead = next(windows, None)
                        if ahead is None:
                            break
                        reading.append((ahead, placement.Windows.low(ahead),
                                        self._lookup(ahead, coverage), added))  # fmt: skip
                    # the ids a window wrote leave ``seen`` once this window's reads find them:
                    # in the ledger when the reads began, and stored before the points at the
                    # ledger's locations are read (in ``result``)
                    while entered and entered[0][0] < visible and entered[0][1] <= sent:
                        seen.forget(entered.popleft()[0] + 1)
                    self._learn(window)  # the dimensions of metrics defined meanwhile
                    found = lookup.result()
                    if forgotten is not None and low < forgotten:  # see the docstring
                        while pending:
                            confirm()
                        lookup = self._lookup(window, coverage)
                        found = lookup.result()
                    if coverage is not None:  # ids found stored by earlier reads: still there?
                        found = self._found_again(window, found)
                    sent_before = lookup.sent.result()
                    claimed = len(elsewhere)
                    unstored = placement.unstored(window, added, found, seen, occupied,
                                                  self._remember)  # fmt: skip
                    known += len(window) - len(unstored)
                    if later:  # forget the slots no row from here on reaches
                        rest = windows.rest_low()
                        floor = min(low, *(ahead_low for _, ahead_low, _, _ in reading),
                                    low if rest is None else rest)  # fmt: skip
                        held = len(occupied.first) + len(occupied.more)
                        if (coverage is None or held > self.KEPT_SLOTS) and placement.prune(
                            occupied, cursor, floor
                        ):
                            forgotten = floor if forgotten is None else max(forgotten, floor)
                            if coverage is not None:  # what is left no longer covers a range,
                                coverage.clear()  # and a read that ran while forgotten
                                coverage = None  # writes were in flight covers nothing
                    later = True
                    for i in range(0, len(unstored), self.WRITE_CHUNK):
                        new = self._enter(unstored[i : i + self.WRITE_CHUNK], sent_before,
                                          elsewhere)  # fmt: skip
                        if not new:
                            continue
                        times, overflow, moved = placement.place(new, occupied, cursor)
                        if coverage is not None:
                            self._keep(occupied, new, times, overflow)
                        body = self._bookkeeping(new, moved)
                        body += self.encoder.encode(new, times, overflow)
                        if len(pending) >= self.WRITERS + self.QUEUED:
                            confirm()
                            settle()
                        pending.append(self._writing().submit(send, body))
                        unconfirmed.append(new)
                        written += len(new)
                    taken += len(window)
                    if len(elsewhere) > claimed:  # those rows are never written by this call
                        seen.kept.update(elsewhere)
                    marks.append((sent + len(pending), taken, len(elsewhere) > claimed))
                    entered.append((added, sent + len(pending)))
                    added += 1
                    settle()
                while pending:
                    confirm()
                if elsewhere:  # see ``_landed``
                    missing = self._landed(elsewhere)
                    known += len(elsewhere) - len(missing)
                    if missing:
                        raise StorageUnavailableError(
                            f"{len(missing)} records (such as {min(missing)!r}) are being"
                            " written by another host, which claimed their ids first, and"
                            f" were not seen stored within {self.LANDING_WAIT:g} s; retry"
                            " later with the same ids: they are counted once"
                        )
                    marks = deque((through, rows, False) for through, rows, _ in marks)
                settle()
                completed = True
            except StorageUnavailableError as exc:
                error = exc
                raise
            finally:
                if coverage is not None and not completed:  # what it took may not have landed
                    self._forget_slots()
                failed.set()  # after an error here: send nothing more
                in_flight: list[Future[Any]] = [*pending]
                for _, _, ahead_lookup, _ in reading:
                    in_flight += [ahead_lookup.sent, ahead_lookup.here]
                wait(in_flight)  # after an error: let the requests in flight end
                if error is not None:  # say how many of the call's rows the server holds
                    error.records_stored = self._count_stored(known, unconfirmed)
        return written

    def _enter(
        self, rows: list[RecordRow], sent: dict[str, RecordRow], elsewhere: dict[str, RecordRow]
    ) -> list[RecordRow]:
        """Enter ``rows`` in the dedupe port before their write and return those to write.

        The ids the window's lookup did not find in ``sent`` are claimed; an id the lookup
        found there, without its point, is taken over unless another host entered it less
        than IN_FLIGHT_S ago (its write may not have landed yet). An id claimed or entered
        by another host (a retry through it at the same moment) is left to that host: it
        joins ``elsewhere`` with where that host sends it."""
        again = [row for row in rows if row.id in sent] if sent else []
        if again:  # a cancelled id stays cancelled: its point is gone on purpose
            cancelled = corrections.refuse_cancelled(self, again, sent)
            if cancelled:
                again = [row for row in again if row.id not in cancelled]
                rows = [row for row in rows if row.id not in cancelled]
        if again:
            lost = self.dedupe.take_over(again, self.writer, self.IN_FLIGHT_S)
            rows_new = [row for row in rows if row.id not in sent]
        else:
            lost, rows_new = {}, rows
        if rows_new:
            lost.update(self.dedupe.claim(rows_new, self.writer))
        if not lost:
            return rows
        elsewhere.update(lost)
        return [row for row in rows if row.id not in lost]

    def _landed(self, elsewhere: dict[str, RecordRow]) -> set[str]:
        """Wait up to LANDING_WAIT seconds for the points of ids another host claimed first,
        reading where it claimed them; return the ids not seen.

        Their progress is reported once seen: the host that claimed an id entered it before
        writing, but only its caller or its outbox hold the record until the point lands,
        and a caller that gave up on it (a client that timed out there and retried here)
        would not send it again. Ids not seen make the call fail, so that the record stays
        with this caller, whose retry finds the point, or finds the entry without its point
        and writes it."""
        deadline = time.monotonic() + self.LANDING_WAIT
        missing = dict(elsewhere)
        pause = 0.02
        while True:
            for tags, values in self.transport.stored(list(missing.values()), slots=True):
                rid = values.get("rid")
                if rid in missing:
                    del missing[rid]
                    self._remember(tags, values)
            if not missing or time.monotonic() >= deadline:
                return set(missing)
            time.sleep(pause)
            pause = min(2 * pause, 0.5)

    def _count_stored(self, known: int, unconfirmed: Iterable[list[RecordRow]]) -> int | None:
        """``known`` plus the rows of ``unconfirmed`` requests that the server holds (a partial
        write stores some lines of a request); None if the server cannot tell."""
        rows = [row for chunk in unconfirmed for row in chunk]
        if not rows:
            return known
        try:
            found = {values.get("rid") for _, values in self.transport.stored(rows, slots=True)}
        except TsmeterError:
            return None
        return known + sum(1 for row in rows if row.id in found)

    def _lookup(self, window: list[RecordRow], coverage: placement.Coverage | None) -> _Lookup:
        """Start reading the points stored where the rows of ``window`` would go now (with
        ``coverage``, only outside the ranges it covers, which it then covers: the window's
        points are taken into the slots before any later window's are placed) and, at the
        same time, where the ledger says their ids were sent before."""
        pool = self._pool_()
        sent = pool.submit(self.dedupe.known, list(map(_ID, window)))
        if coverage is None:
            return _Lookup(self, sent, pool.submit(self.transport.stored, window, slots=True))
        return _Lookup(self, sent, pool.submit(self._read_all, coverage.reads(window)))

    def _found_again(self, window: list[RecordRow], found: _Points) -> _Points:
        """``found`` with the points, read again where an earlier read found them, of the
        window's ids that the kept reads found stored; and those kept reads grown by
        ``found``. A window whose rows are covered is not read, and the ledger knows only
        the ids entered in it."""
        kept = self._found
        again = [kept[row[0]] for row in window if row[0] in kept]
        if again:
            found = found + self.transport.stored(again, slots=True)
        for tags, values in found:
            rid = values.get("rid")
            if rid is not None:
                kept[rid] = RecordRow(rid, *series_key_of(tags, values), 0,
                                      int(values["time"]), None, None)  # fmt: skip
        return found

    def _read_all(self, reads: list[tuple[list[RecordRow], dict[int, tuple[int, int]]]]) -> _Points:
        """The points stored in the spans of ``reads`` (see ``placement.Coverage.reads``)."""
        found: _Points = []
        for rows, spans in reads:
            found += self.transport.stored(rows, slots=True, spans=spans)
        return found

    def _keep(
        self,
        occupied: placement.Slots,
        rows: list[RecordRow],
        times: list[int],
        overflow: list[int],
    ) -> None:
        """Hold the slots just placed by their series alone, not by their rows: they are kept
        after the call, which must not keep the records."""
        first, standins = occupied.first, self._standins
        for row, ts, c in zip(rows, times, overflow, strict=True):
            if not c and first.get(ts) is row:
                key = (row[1], row[2], row[3], row[4])
                standin = standins.get(key)
                if standin is None:
                    standin = standins[key] = (None, *key)
                first[ts] = standin

    def _writing(self) -> ThreadPoolExecutor:
        """WRITERS threads that send the encoded chunks in order."""
        if self._write_pool is None:
            self._write_pool = ThreadPoolExecutor(self.WRITERS, thread_name_prefix="tsmeter-write")
        return self._write_pool

    def _pool_(self) -> ThreadPoolExecutor:
        """Threads for the reads of ``append``: two for each window being read (the current
        one and READ_AHEAD more)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                2 * (self.READ_AHEAD + 1), thread_name_prefix="tsmeter-influx"
            )
        return self._pool

    def _bookkeeping(self, rows: list[RecordRow], moved: set[tuple[SeriesKey, int]]) -> bytes:
        """Collision marks and the change log (which metrics received records in which UTC
        hour)."""
        lines = []
        for (metric, subject_type, subject_id, org), micro in sorted(moved, key=repr):
            tags = {"metric": metric, "subject_type": subject_type, "subject_id": subject_id,
                    "org": org or ""}  # fmt: skip
            lines.append(encode_point(COLLISIONS, tags, {"n": 1}, micro))
        now = max(time.time_ns(), self._log_clock)  # no two log points of a writer coincide
        hours = sorted({(metric, org or "", hour) for metric, org, hour in placement.hours(rows)})
        self._log_clock = now + len(hours)
        for i, (metric, org, hour) in enumerate(hours):
            tags = {"metric": metric, "org": org, "w": self.writer}
            lines.append(encode_point(DIRTY, tags, {"hour": hour}, now + i))
        return "".join(f"{line}\n" for line in lines).encode()

    def _remember(self, tags: dict[str, str], values: dict[str, Any]) -> None:
        """Keep a stored point of an id being written again: the record when the read had all
        its fields, else where it is (``get_record`` reads it there)."""
        if len(self._recent) + len(self._seen) > 10_000:
            self._recent.clear()
            self._seen.clear()
        if complete(values):
            self._recent[values["rid"]] = row_of(tags, values, self.transport.precisions)
        else:
            at = int(values["time"])
            self._seen[values["rid"]] = RecordRow(
                values["rid"], *series_key_of(tags, values), 0, at, None, None
            )

    def _sent_to(self, record_id: str) -> RecordRow | None:
        """The record with this id, read where a write found it or the ledger says it went."""
        places = list(self.dedupe.known([record_id]).values())
        if record_id in self._seen:
            places.append(self._seen[record_id])
        if places:
            for tags, values in self.transport.stored(places):
                if values.get("rid") == record_id and complete(values):
                    return row_of(tags, values, self.transport.precisions)
        return None

    # -- corrections ------------------------------------------------------------------
    def correct(self, request: CorrectionRequest, not_before: int) -> tuple[CorrectionRow, bool]:
        """Cancel or amend a stored record with its audit point, under the host lock (see the
        UsageStore port and :mod:`tsmeter.adapters.influxdb.corrections`)."""
        with self._exclusive():
            return corrections.apply(self, request, not_before)

    def list_corrections(self, query: CorrectionQuery) -> list[CorrectionRow]:
        """The corrections ``query`` asks for, oldest first."""
        rows = [row for row in self.transport.corrections.corrections(query) if query.matches(row)]
        return sorted(rows, key=lambda c: (c.corrected_at, c.id))

    def places(self, record_id: str) -> list[RecordRow]:
        """Where the id was sent (the ledger) or found (this store's reads): rows with its
        series and time."""
        places = list(self.dedupe.known([record_id]).values())
        for kept in (self._seen, self._found, self._recent):
            if record_id in kept:
                places.append(kept[record_id])
        return places

    def forget_record(self, record_id: str) -> None:
        """Drop what this store remembers of a record's point (it was corrected)."""
        for kept in (self._recent, self._seen, self._found):
            kept.pop(record_id, None)

    def log_stamp(self) -> int:
        """A change-log stamp of this writer, later than any it gave before (called under the
        host lock, as the write path's bookkeeping is)."""
        now = max(time.time_ns(), self._log_clock)
        self._log_clock = now + 1
        return now

    # -- reading ----------------------------------------------------------------------
    def get_record(self, record_id: str) -> RecordRow | None:
        """The stored record with this id (recently seen ones from memory, else where the
        dedupe port says, else a scan of every record id, which is slow on large databases)."""
        if record_id in self._recent:
            return self._recent[record_id]
        found = self._sent_to(record_id)
        if found is not None:
            return found
        return self.transport.find_record(record_id)

    def iter_records(self, query: RecordQuery) -> Iterator[RecordRow]:
        """Records matching ``query`` ordered by (time, id), read one time window at a time."""
        return self.transport.iter_records(query)

    def count_records(self, query: RecordQuery) -> int | None:
        """How many records match ``query`` (its limit ignored), counted by the server."""
        return self.transport.count_records(query)

    def readings_before(
        self, query: RecordQuery, at: int, dimensions: Sequence[str]
    ) -> list[RecordRow]:
        """The latest record before ``at`` of each series of ``query`` and combination of
        the values of ``dimensions`` (see the port): grouped by the ``dim.<name>`` tags on
        the v1 API, from the records on InfluxDB 2.x (see each transport)."""
        return self.transport.readings_before(query, at, dimensions)

    def purge_metric(self, metric_key: str, org_id: str | None) -> int:
        """Delete every point of a metric (records, summaries, marks, change log) in one org
        scope; return how many records were deleted."""
        count = self.transport.purge(metric_key, org_id)
        self.dedupe.forget_series(metric_key, org_id)
        with self._lock:
            self._forget_slots()
        self._recent.clear()
        self._seen.clear()
        return count

    # -- metering events ---------------------------------------------------------------
    def append_events(self, events: Sequence[EventRow]) -> None:
        """Write events as points of ``metering_events`` (tag ``event`` = name; the details
        in field ``data``). Events of one series at one time are spread 1 ns apart.

        A threshold event (``threshold.*``) also writes the window it is about to
        ``threshold_windows`` (for InfluxQL annotations, which cannot read JSON): timed at
        the window start, ``end_ms`` its end in epoch milliseconds, ``text`` a line such as
        ``api_calls exceeded for org acme: 11 of 10``; the event's time stands in for an
        open end of a lifetime window. One point per threshold, level, subject and window:
        a later event of the same kind overwrites it. Data without a readable window writes
        the event alone."""

        def window_point(e: EventRow, tags: dict[str, str]) -> str | None:
            try:
                data = json.loads(e.data)
                if not isinstance(data, dict):
                    return None
                bounds = []
                for key in ("periodStart", "periodEnd"):
                    value = data.get(key)
                    if value is None:
                        bounds.append(e.ts)
                        continue
                    when = datetime.fromisoformat(value)
                    bounds.append(to_ns(when if when.tzinfo else when.replace(tzinfo=UTC)))
            except (TypeError, ValueError, OverflowError):
                return None
            start, end = bounds
            text = f"{e.metric_key} {e.name.removeprefix('threshold.')} for {e.subject_type}"
            text += f" {e.subject_id}"
            actual, limit = data.get("actualValue"), data.get("thresholdValue")
            if actual is not None and limit is not None:
                text += f": {actual} of {limit}"
            window_tags = {**tags, "threshold_id": str(data.get("thresholdId") or ""),
                           "level": str(data.get("level") or "")}  # fmt: skip
            return encode_point(
                THRESHOLD_WINDOWS, window_tags, {"end_ms": end // 1_000_000, "text": text}, start
            )

        taken: set[tuple[str, SeriesKey, int]] = set()
        lines = []
        for e in events:
            key: SeriesKey = (e.metric_key, e.subject_type, e.subject_id, e.org_id)
            ts = e.ts
            while (e.name, key, ts) in taken:
                ts += 1
            taken.add((e.name, key, ts))
            tags = {"event": e.name, "metric": e.metric_key, "subject_type": e.subject_type,
                    "subject_id": e.subject_id, "org": e.org_id or ""}  # fmt: skip
            lines.append(encode_point(EVENTS, tags, {"data": e.data}, ts))
            if e.name.startswith("threshold."):
                window = window_point(e, tags)
                if window is not None:
                    lines.append(window)
        if lines:
            self.transport.write("".join(f"{line}\n" for line in lines).encode())

    def list_events(
        self, start: int | None = None, end: int | None = None, name: str | None = None
    ) -> list[EventRow]:
        """Events in ``[start, end)``, optionally of one name or name family, oldest first."""
        return self.transport.list_events(start, end, name)

    # -- summaries --------------------------------------------------------------------
    def rollup(
        self,
        period: PeriodType,
        calendar: Calendar,
        start: int | None = None,
        end: int | None = None,
    ) -> RollupStats:
        """Bring summaries of ``period`` up to date (see the port)."""
        return self.transport.rollup(period, calendar, start, end)

    def summaries(self, query: SummaryQuery, calendar: Calendar) -> list[SummaryRow]:
        """Fresh summaries: stored ones, recomputed where records arrived since."""
        return self.transport.summaries(query, calendar)


class _Lookup:
    """The two reads of a window: the ledger's earlier locations of its ids (``sent``) and
    the points where its rows go now (``here``)."""

    def __init__(
        self, store: InfluxStore, sent: Future[dict[str, RecordRow]], here: Future[_Points]
    ) -> None:
        self.store, self.sent, self.here = store, sent, here

    def result(self) -> _Points:
        """Every point found; ids sent elsewhere before are read there too (rare: a retry)."""
        found = self.here.result()
        sent = self.sent.result()
        if sent:
            found = found + self.store.transport.stored(list(sent.values()), slots=True)
        return found
