"""How the outbox stores a batch of rows: one value, its first byte naming the format.

Formats 4 and 5 hold quantities in units (integers: the value times ``10 ** precision`` of
the row's metric, see :class:`~tsmeter.domain.RecordRow`):

* Format 4, written when every quantity is an int (always, from the intake): the rows as
  msgpack arrays, encoded and decoded by msgspec (a row's types are checked as it is read).
* Format 5, written otherwise (a value msgpack cannot take: a str subclass, a lone
  surrogate): ``marshal`` of the tuples.

Formats 1, 2 and 3 were written by earlier versions, whose quantities were the plain values
(floats, or ints), not units: :func:`legacy` tells them apart, :func:`unpack` still reads
them (quantities as stored), and the outbox converts them to units with each metric's
precision before delivery (see ``Outbox``'s ``upgrade``), so files written before stay
deliverable. :func:`pack_legacy` writes such rows back in format 1 (a quarantined legacy row
stays one):

* Format 3: msgpack arrays (as format 4, the quantities floats).
* Format 1: ``marshal`` of the tuples.
* Format 2, written by earlier versions' compiled path: per field a tag and its payload, a
  field equal to the row before's stored as such (see ``_unpack_2``).

A damaged batch raises StorageUnavailableError, never gives part of its rows.

:func:`insert` commits batches to the outbox's table; :class:`HeldBatches` keeps
committed batches as the rows that were put, so the outbox's delivering process need not
read them back.
"""

from __future__ import annotations

import marshal
import sqlite3
import struct
import threading
from collections.abc import Sequence
from functools import partial
from itertools import repeat
from operator import itemgetter

import msgspec

from tsmeter.domain import RecordRow
from tsmeter.errors import StorageUnavailableError

__all__ = ["HeldBatches", "insert", "legacy", "pack", "pack_legacy", "unpack"]

#: SQLite 3.35 and later: a commit of one batch is one statement, ``INSERT ... RETURNING``
#: (fewer statements: a thread gives up the interpreter lock for each, and waits for it
#: again while other threads run)
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

_FORMAT = 1  # marshal of the row tuples, plain quantities (earlier versions)
_FORMAT_2 = 2  # compact rows (see _unpack_2), plain quantities (earlier versions)
_FORMAT_3 = 3  # msgpack arrays, plain quantities (earlier versions)
_FORMAT_4 = 4  # msgpack arrays, quantities in units
_FORMAT_5 = 5  # marshal of the row tuples, quantities in units
_LEGACY = frozenset({_FORMAT, _FORMAT_2, _FORMAT_3})
_WIDTH = len(RecordRow._fields)
_new_row = partial(tuple.__new__, RecordRow)
_QUANTITY = itemgetter(RecordRow._fields.index("quantity"))
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[RecordRow])  # checks each field's type
_any_decoder = msgspec.msgpack.Decoder()


def pack(rows: Sequence[RecordRow]) -> bytes:
    """A stored batch of rows whose quantities are units: format 4 (msgpack) when every
    quantity is an int (the intake's rows; a row's other values of another type are kept as
    msgpack has them), else format 5 (marshal, which takes any value a row may hold).

    >>> row = RecordRow("r1", "api_calls", "org", "o1", None, 1_500_000, 5, None, None)
    >>> unpack(pack([row])) == [row], legacy(pack([row]))
    (True, False)
    """
    if set(map(type, map(_QUANTITY, rows))) <= {int}:
        try:
            return bytes([_FORMAT_4]) + _encoder.encode(rows)
        except (TypeError, OverflowError, UnicodeEncodeError):
            pass  # a str subclass, an int beyond 64 bits, a lone surrogate: marshal takes it
    return bytes([_FORMAT_5]) + marshal.dumps(list(map(tuple, rows)))


def pack_legacy(rows: Sequence[RecordRow]) -> bytes:
    """Rows read from a batch of an earlier version (plain quantities, not units) stored
    again as such: format 1, which :func:`legacy` recognises, so they are converted when
    delivered.

    >>> row = RecordRow("r1", "api_calls", "org", "o1", None, 1.5, 5, None, None)
    >>> unpack(pack_legacy([row])) == [row], legacy(pack_legacy([row]))
    (True, True)
    """
    return bytes([_FORMAT]) + marshal.dumps(list(map(tuple, rows)))


def legacy(blob: bytes) -> bool:
    """Whether a stored batch was written by an earlier version: its quantities are the
    plain values (floats, or ints), to be converted to units before delivery."""
    return blob[:1] != b"" and blob[0] in _LEGACY


def unpack(blob: bytes) -> list[RecordRow]:
    """The rows of a stored batch, in any format this or an earlier version wrote (the
    quantities as stored: units, or plain values where :func:`legacy`)."""
    kind = blob[:1]
    if kind == bytes([_FORMAT_4]):
        try:
            return _decoder.decode(blob[1:])
        except msgspec.ValidationError:  # values of other types: read as they are
            rows = _any_rows(blob)
            if not all(type(row.quantity) is int for row in rows):
                raise StorageUnavailableError(
                    "outbox batch damaged: a quantity is not units"
                ) from None
            return rows
        except msgspec.DecodeError as exc:
            raise StorageUnavailableError(f"outbox batch damaged: {exc}") from None
    if kind == bytes([_FORMAT_5]):
        return _marshal_rows(blob)
    if kind == bytes([_FORMAT_3]):
        return _any_rows(blob)  # the quantities floats: read without the field types
    if kind == bytes([_FORMAT_2]):
        try:
            if len(blob) < 6 or blob[5] != _WIDTH:
                raise ValueError("rows of another width")
            return _unpack_2(blob)
        except (ValueError, struct.error, IndexError) as exc:
            raise StorageUnavailableError(f"outbox batch damaged: {exc}") from None
    if not blob or blob[0] != _FORMAT:
        raise StorageUnavailableError("outbox batch in an unknown format (newer tsmeter?)")
    return _marshal_rows(blob)


def _marshal_rows(blob: bytes) -> list[RecordRow]:
    """Format 1 or 5 rows."""
    try:
        rows = marshal.loads(blob[1:])
    except (EOFError, ValueError, TypeError) as exc:
        raise StorageUnavailableError(f"outbox batch damaged: {exc}") from None
    if type(rows) is not list or not all(
        type(values) is tuple and len(values) == _WIDTH for values in rows
    ):
        raise StorageUnavailableError("outbox batch with rows of another width (newer tsmeter?)")
    return list(map(tuple.__new__, repeat(RecordRow), rows))


def _any_rows(blob: bytes) -> list[RecordRow]:
    """Format 3 or 4 rows read without the field types."""
    try:
        rows = _any_decoder.decode(blob[1:])
    except msgspec.DecodeError as exc:
        raise StorageUnavailableError(f"outbox batch damaged: {exc}") from None
    if type(rows) is not list or not all(
        type(values) is list and len(values) == _WIDTH for values in rows
    ):
        raise StorageUnavailableError("outbox batch with rows of another width (newer tsmeter?)")
    return list(map(tuple.__new__, repeat(RecordRow), rows))


def _unpack_2(blob: bytes) -> list[RecordRow]:
    """Format 2 (written by earlier versions' compiled path): byte 2,
    the row count (uint32 little-endian) and width (uint8), then per field a tag and its
    payload: 0 None, 1 the same value as the row before, 2 str (uint32 length, UTF-8),
    3 float (IEEE 754 little-endian), 4 int (int64 little-endian)."""
    count, width = struct.unpack_from("<IB", blob, 1)
    if width != _WIDTH:
        raise ValueError(f"rows of {width} values")
    pos, rows, before = 6, [], None
    for _ in range(count):
        values: list[object] = []
        for k in range(width):
            tag = blob[pos]
            pos += 1
            if tag == 0:
                values.append(None)
            elif tag == 1 and before is not None:
                values.append(before[k])
            elif tag == 2:
                (size,) = struct.unpack_from("<I", blob, pos)
                if pos + 4 + size > len(blob):
                    raise ValueError("a string past the end")
                values.append(blob[pos + 4 : pos + 4 + size].decode())
                pos += 4 + size
            elif tag in (3, 4):
                values.append(struct.unpack_from("<d" if tag == 3 else "<q", blob, pos)[0])
                pos += 8
            else:
                raise ValueError(f"tag {tag}")
        before = values
        rows.append(_new_row(values))
    if pos != len(blob):
        raise ValueError("bytes after the last row")
    return rows


def insert(conn: sqlite3.Connection, batches: list[tuple[int, bytes, int]]) -> int:
    """Commit ``(n, packed rows, created_at)`` batches to ``outbox_batches`` as one
    transaction (``conn`` in autocommit mode, under the caller's lock); return the number
    of the last (they are numbered consecutively)."""
    if len(batches) == 1 and _RETURNING:  # one statement: one transaction
        ((last,),) = conn.execute(
            "INSERT INTO outbox_batches (n, rows, created_at) VALUES (?, ?, ?) RETURNING seq",
            batches[0],
        ).fetchall()
        return int(last)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT INTO outbox_batches (n, rows, created_at) VALUES (?, ?, ?)", batches
        )
        (last,) = conn.execute("SELECT max(seq) FROM outbox_batches").fetchone()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(last)


class HeldBatches:
    """Committed batches still held as the rows that were put, by batch number, up to
    ``limit`` records, while ``on`` (the outbox turns it on when the store answers as the
    flusher starts, or once the store took part of a delivery, and off when one fails: a
    store that is down does not make it hold its backlog)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.rows = 0  # records held
        self.on = False
        self._batches: dict[int, list[RecordRow]] = {}
        self._lock = threading.Lock()

    def hold(self, first: int, parts: list[list[RecordRow]]) -> None:
        """Hold the batches numbered ``first``, ``first + 1``, ... while on, up to the limit."""
        with self._lock:
            if not self.on:
                return
            for seq, part in enumerate(parts, first):
                if self.rows + len(part) > self.limit:
                    break
                self._batches[seq] = part
                self.rows += len(part)

    def take(self, seq: int) -> list[RecordRow] | None:
        """The rows of batch ``seq``, no longer held; None if it is not held."""
        with self._lock:
            rows = self._batches.pop(seq, None)
            if rows is not None:
                self.rows -= len(rows)
            return rows

    def drop_below(self, seq: int) -> None:
        """Forget the batches numbered below ``seq`` (gone from the file)."""
        with self._lock:
            for old in [old for old in self._batches if old < seq]:
                self.rows -= len(self._batches.pop(old))

    def stop(self) -> None:
        """Hold nothing, and nothing more until turned on again."""
        with self._lock:
            self.on = False
            self._batches.clear()
            self.rows = 0
