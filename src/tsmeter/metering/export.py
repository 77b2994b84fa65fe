"""usage.export's file formats: stored record rows written as JSON Lines or CSV that
``tsmeter usage import`` reads back to the same records.

Rows are written as they come from the store, without building a model per record: ids and
names as stored, quantities as exact decimal strings with the metric's places, timestamps as
ISO-8601 in the configured zone with their offset, metadata as the stored JSON object.
JSON is encoded by msgspec a chunk at a time; CSV by the csv module.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, tzinfo
from itertools import islice
from typing import IO, Literal

import msgspec

from tsmeter.domain import RecordRow

__all__ = [
    "EXPORT_COLUMNS",
    "RecordWriter",
    "decimal_text",
    "instant_text",
    "neutralise_cell",
    "restore_cell",
]

#: the CSV header, and the keys of each JSON line in this order
EXPORT_COLUMNS = (
    "id", "metricKey", "subjectType", "subjectId", "quantity", "timestamp", "metadata",
    "source", "orgId",
)  # fmt: skip
_RISKY = re.compile(r"'*[=+\-@\t\r]")
_NEUTRALISED = re.compile(r"'+[=+\-@\t\r]")
_RISKY_FIRST = frozenset("'=+-@\t\r")  # a cell can only be risky if it starts with one
_CHUNK = 2000  # rows encoded per write
_NS = 1_000_000_000
_EMPTY = msgspec.Raw(b"{}")


def neutralise_cell(text: str) -> str:
    """A CSV text cell made safe to open in a spreadsheet (OWASP CSV injection): ``'`` put
    before a cell that starts, after any ``'``, with ``= + - @``, TAB or CR. Reversible:
    :func:`restore_cell` gives the value back, so a re-import gets the original.

    >>> neutralise_cell("=HYPERLINK(1)"), neutralise_cell("'=x"), neutralise_cell("'abc")
    ("'=HYPERLINK(1)", "''=x", "'abc")
    """
    return "'" + text if _RISKY.match(text) else text


def restore_cell(text: str) -> str:
    """The value a cell had before :func:`neutralise_cell`: one leading ``'`` removed where
    it is followed by any more ``'`` and then ``= + - @``, TAB or CR.

    >>> restore_cell("'=HYPERLINK(1)"), restore_cell("''=x"), restore_cell("'abc")
    ('=HYPERLINK(1)', "'=x", "'abc")
    """
    return text[1:] if _NEUTRALISED.match(text) else text


def decimal_text(units: int, precision: int) -> str:
    """The exact decimal of ``units`` at ``precision`` places, as plain digits (never an
    exponent, which ``str(Decimal)`` gives for small values).

    >>> decimal_text(-5, 2), decimal_text(7, 0), decimal_text(1, 12), decimal_text(0, 3)
    ('-0.05', '7', '0.000000000001', '0.000')
    """
    if precision == 0:
        return str(units)
    whole, part = divmod(-units if units < 0 else units, 10**precision)
    return f"{'-' if units < 0 else ''}{whole}.{part:0{precision}d}"


def instant_text(ns: int, zone: tzinfo) -> str:
    """Nanoseconds since the epoch as ISO-8601 in ``zone`` with its offset: microseconds when
    there are any, nanoseconds only when there are some.

    >>> from zoneinfo import ZoneInfo
    >>> instant_text(1_774_747_800_000_001_000, ZoneInfo("Europe/Paris"))
    '2026-03-29T03:30:00.000001+02:00'
    """
    return _Instants(zone)(ns)


class _Instants:
    """:func:`instant_text` with the text of the last second kept (records come in time
    order, so consecutive ones mostly share it); the offset is constant within a second, as
    zone transitions fall on whole seconds."""

    def __init__(self, zone: tzinfo) -> None:
        self._zone = zone
        self._second: int | None = None
        self._head = self._offset = ""

    def __call__(self, ns: int) -> str:
        second, fraction = divmod(ns, _NS)
        if second != self._second:
            text = datetime.fromtimestamp(second, self._zone).isoformat()
            self._second, self._head, self._offset = second, text[:19], text[19:]
        if not fraction:
            return self._head + self._offset
        if fraction % 1000:
            return f"{self._head}.{fraction:09d}{self._offset}"
        return f"{self._head}.{fraction // 1000:06d}{self._offset}"


class _Line(msgspec.Struct, array_like=False):
    """One JSON line (field names are the JSON keys, in the order of EXPORT_COLUMNS)."""

    id: str
    metricKey: str
    subjectType: str
    subjectId: str
    quantity: str
    timestamp: str
    metadata: msgspec.Raw
    source: str | None
    orgId: str | None


class RecordWriter:
    """Writes stored rows of metrics to ``out`` as JSON Lines or CSV, quantities at each
    metric's precision and times in ``zone``.

    In CSV, ``neutralise`` passes the text cells (not quantities or timestamps) through
    :func:`neutralise_cell`; metadata cells hold the stored JSON object (empty for none).
    Example::

        writer = RecordWriter(sys.stdout, "jsonl", ZoneInfo("UTC"))
        writer.write(store.iter_records(query), precision=6)
    """

    def __init__(
        self,
        out: IO[str],
        fmt: Literal["jsonl", "csv"],
        zone: tzinfo,
        *,
        neutralise: bool = True,
    ) -> None:
        self._out = out
        self._instant = _Instants(zone)
        self._encoder = msgspec.json.Encoder()
        self._csv = csv.writer(out) if fmt == "csv" else None
        self._neutralise = neutralise
        if self._csv is not None:
            self._csv.writerow(EXPORT_COLUMNS)

    def write(self, rows: Iterable[RecordRow], precision: int) -> Iterator[int]:
        """Write ``rows`` of one metric of ``precision`` places; yield how many were written
        after each chunk (for progress)."""
        rows = iter(rows)
        while chunk := list(islice(rows, _CHUNK)):
            if self._csv is None:
                self._out.write(self._json(chunk, precision))
            else:
                self._csv.writerows(self._cells(chunk, precision))
            yield len(chunk)

    def _json(self, chunk: list[RecordRow], precision: int) -> str:
        instant = self._instant
        lines = [
            _Line(rid, mk, st, si, decimal_text(units, precision), instant(ts),
                  msgspec.Raw(md.encode()) if md else _EMPTY, src, org)
            for rid, mk, st, si, org, units, ts, md, src in chunk
        ]  # fmt: skip
        return self._encoder.encode_lines(lines).decode()

    def _cells(self, chunk: list[RecordRow], precision: int) -> list[tuple[str, ...]]:
        instant = self._instant
        text = self._text if self._neutralise else _plain
        return [
            (text(rid), text(mk), text(st), text(si), decimal_text(units, precision),
             instant(ts), md or "", text(src or ""), text(org or ""))
            for rid, mk, st, si, org, units, ts, md, src in chunk
        ]  # fmt: skip

    @staticmethod
    def _text(value: str) -> str:
        # metadata is not passed here: a JSON object's text starts with "{"
        return neutralise_cell(value) if value and value[0] in _RISKY_FIRST else value


def _plain(value: str) -> str:
    return value
