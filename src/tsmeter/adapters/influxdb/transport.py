"""The transport under the InfluxDB store: how bytes reach the server and reads come back.

:class:`~tsmeter.adapters.influxdb.store.InfluxStore` holds the write path and the point
schema; a transport is what differs between the v1 API (InfluxQL over HTTP,
:class:`~tsmeter.adapters.influxdb.v1.V1Transport`) and InfluxDB 2.x (Flux through
influxdb-client, :class:`~tsmeter.adapters.influxdb.v2.V2Transport`). Sibling transports under
one interface, so the store never swaps a client or subclasses another store.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tsmeter.domain import MetricDefinition, PeriodType, RecordRow
from tsmeter.domain.periods import Calendar
from tsmeter.ports import EventRow, RecordQuery, RollupStats, SummaryQuery, SummaryRow

if TYPE_CHECKING:
    from tsmeter.adapters.influxdb.corrections import Backend

__all__ = ["Conversion", "Points", "Transport"]

#: stored points as read: (series tags, column -> value, with ``time`` the point's time)
Points = list[tuple[dict[str, str], dict[str, Any]]]


@dataclass
class Conversion:
    """What ``tsmeter influx convert`` did to the raw points of an earlier version."""

    #: points that received their integer ``units``
    converted: int = 0
    #: of those, points whose float quantity had more places than its metric keeps (rounded
    #: half to even)
    rounded: int = 0
    #: [first, last + 1) of the converted points' times (None: none converted)
    range: tuple[int, int] | None = None
    #: (metric, org) pairs not in the catalog, converted at the default precision
    unknown: set[tuple[str, str | None]] = field(default_factory=set)

    def add(self, at: int) -> None:
        """Count one converted point at time ``at``."""
        self.converted += 1
        lo, hi = self.range or (at, at + 1)
        self.range = (min(lo, at), max(hi, at + 1))


class Transport(Protocol):
    """One InfluxDB database (or bucket) as the store sees it (see the module docstring)."""

    #: where record ids are sent, for the dedupe port: base URL and database (or org/bucket)
    target: str
    #: names the host-wide lock that serialises read-then-write on this database
    lock_name: str
    #: tag ``w`` of this process's points (None: the host name)
    writer: str | None
    #: whether :meth:`ping` says anything (else the store offers no probe)
    can_ping: bool
    #: whether :meth:`stored` returns every point of the rows' (metric, org) pairs in the
    #: span it reads, not only the rows' series (see ``placement.Coverage``)
    reads_pairs: bool
    #: (metric, org) -> precision: lets raw reads convert points of an earlier version
    #: (float ``quantity``) as ``tsmeter influx convert`` would (see ``schema.legacy_units``)
    precisions: dict[tuple[str, str | None], int]
    #: the reads and deletes corrections need (see :mod:`tsmeter.adapters.influxdb.corrections`)
    corrections: Backend

    def write(self, body: bytes) -> None:
        """Send line protocol; return once the server stored it (raise a TsmeterError else)."""
        ...

    def ping(self, timeout: float) -> bool:
        """Whether the server answers within ``timeout`` seconds; never raises."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...

    def stored(
        self,
        rows: Sequence[RecordRow],
        *,
        slots: bool = False,
        spans: Mapping[int, tuple[int, int]] | None = None,
    ) -> Points:
        """Points already stored in the metrics and microseconds spanned by ``rows`` (with
        ``spans``: in the [lo, hi) given for each UTC day of the rows instead; with
        ``slots``, at least the record id, series tags and time of each)."""
        ...

    def writers(self) -> set[str] | None:
        """The writer names (tag ``w``) of the stored records, or None where the transport
        cannot tell cheaply."""
        ...

    def find_record(self, record_id: str) -> RecordRow | None:
        """The stored record with this id, by a scan of every record id (the slow way)."""
        ...

    def iter_records(self, query: RecordQuery) -> Iterator[RecordRow]:
        """Records matching ``query`` ordered by (time, id)."""
        ...

    def count_records(self, query: RecordQuery) -> int | None:
        """How many records match ``query`` (its limit ignored), or None where the transport
        cannot count them without reading them."""
        ...

    def readings_before(
        self, query: RecordQuery, at: int, dimensions: Sequence[str]
    ) -> list[RecordRow]:
        """The latest record before ``at`` of each series of ``query`` and combination of
        the values of ``dimensions`` (see the UsageStore port)."""
        ...

    def purge(self, metric_key: str, org_id: str | None) -> int:
        """Delete every point of a metric in one org scope; return the records deleted."""
        ...

    def list_events(self, start: int | None, end: int | None, name: str | None) -> list[EventRow]:
        """Metering events in ``[start, end)``, optionally of one name or family, oldest first."""
        ...

    def rollup(
        self, period: PeriodType, calendar: Calendar, start: int | None, end: int | None
    ) -> RollupStats:
        """Bring summaries of ``period`` up to date (see the UsageStore port)."""
        ...

    def summaries(self, query: SummaryQuery, calendar: Calendar) -> list[SummaryRow]:
        """Fresh summaries: stored ones, recomputed where records arrived since."""
        ...

    def convert(self, precisions: Mapping[tuple[str, str | None], int], default: int) -> Conversion:
        """Write integer ``units`` onto every raw point that has a float ``quantity`` and no
        ``units`` (same measurement, tags and time: the server merges the field in), at the
        precision of its (metric, org) in ``precisions``, else ``default``."""
        ...

    def mark_converted(self, conversion: Conversion, now: int) -> None:
        """Record that every raw point has its units (roll-ups refuse to run before)."""
        ...

    def summary_kinds(self) -> list[tuple[PeriodType, str]]:
        """The (period type, time zone) of every summary measurement stored."""
        ...

    def init(self) -> str:
        """Create the database or bucket if missing; say which, as ``"Database 'x'"``."""
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
        """Install what keeps summaries up to date inside the server; one line per item."""
        ...
