"""Importing usage records from JSON Lines or CSV, line by line, in bounded batches.

Each line is parsed on its own; a bad line is reported as ``line N: field:
problem`` and skipped, and every good line is recorded exactly once:

* lines without an ``id`` get a deterministic one (UUIDv5 of the file's name,
  the line number and the line's text), so importing the same file again
  records nothing new;
* good lines go to :meth:`tsmeter.Meter.record_batch` in batches, so memory
  stays bounded whatever the file's size. A batch is validated as a whole
  first (one pass when the file is clean); only a batch that holds a bad
  record is checked line by line to find which.
"""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from tsmeter.errors import ValidationError
from tsmeter.service import Meter

__all__ = [
    "BadLine",
    "ImportResult",
    "import_records",
    "line_id",
    "parse_csv",
    "parse_jsonl",
    "read_lines",
]

ID_NAMESPACE = uuid.UUID("eaeda685-2aa8-4d7c-925a-8ca711314a1c")
_NAMESPACE_BYTES = ID_NAMESPACE.bytes
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
REQUIRED_COLUMNS = ("metricKey", "subjectType", "subjectId")
_CSV_COLUMNS = {
    "id": "id",
    "metricKey": "metricKey",
    "metric_key": "metricKey",
    "subjectType": "subjectType",
    "subject_type": "subjectType",
    "subjectId": "subjectId",
    "subject_id": "subjectId",
    "quantity": "quantity",
    "timestamp": "timestamp",
    "metadata": "metadata",
    "source": "source",
    "orgId": "orgId",
    "org_id": "orgId",
}
_JSON_TYPES = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}

Line = tuple[int, str | None]  # (line number, text; None if it is not UTF-8)


@dataclass(frozen=True)
class BadLine:
    """A line that was skipped, and why: ``line 3: quantity: must be a number, got 'abc'``."""

    line: int
    field: str
    problem: str

    def __str__(self) -> str:
        where = f"line {self.line}: "
        return where + (f"{self.field}: {self.problem}" if self.field else self.problem)


@dataclass
class ImportResult:
    """What an import did: records read, newly recorded, already there, and bad lines; with
    an outbox, records ``queued`` for the store instead of recorded and duplicates."""

    lines: int = 0
    recorded: int = 0
    duplicates: int = 0
    bad: int = 0
    queued: int = 0


def line_id(name: str, line: int, text: str) -> str:
    """The id given to a line without one: stable for the same file name, line and text.

    It is ``uuid5(ID_NAMESPACE, f"{name}\\n{line}\\n{text}")``, formatted directly
    from the SHA-1 digest (several times faster than building a UUID object).

    >>> line_id("usage.jsonl", 1, "{}")
    'b4955b01-be78-56e9-8224-c2a4879b4e3f'
    """
    h = hashlib.sha1(_NAMESPACE_BYTES + f"{name}\n{line}\n{text}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def read_lines(stream: IO[bytes], progress: Callable[[int], None] | None = None) -> Iterator[Line]:
    """Number and decode the lines of a binary stream (a UTF-8 byte order mark is dropped);
    ``progress`` is told how many bytes each line took."""
    for number, raw in enumerate(stream, 1):
        if progress is not None:
            progress(len(raw))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield number, None
            continue
        yield number, text.removeprefix("\ufeff") if number == 1 else text


def parse_jsonl(lines: Iterable[Line], name: str) -> Iterator[tuple[int, dict[str, Any] | BadLine]]:
    """One JSON object per line (blank lines are skipped) -> ``(line, record or BadLine)``."""
    for number, text in lines:
        if text is None:
            yield number, BadLine(number, "", "not valid UTF-8 text")
            continue
        body = text.rstrip("\r\n")
        if not body.strip():
            continue
        try:
            item = json.loads(body)
        except json.JSONDecodeError as exc:
            yield number, BadLine(number, "", f"not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        except (ValueError, RecursionError) as exc:
            yield number, BadLine(number, "", f"not valid JSON: {exc}")
            continue
        if not isinstance(item, dict):
            got = _JSON_TYPES.get(type(item), type(item).__name__)
            yield number, BadLine(number, "", f"must be a JSON object, got {got}")
            continue
        if item.get("id") is None:
            item["id"] = line_id(name, number, body)
        yield number, item


class _Tap:
    """Feeds lines to :func:`csv.reader` and remembers those that made up the last row."""

    def __init__(self, lines: Iterable[Line]) -> None:
        self._lines = iter(lines)
        self.texts: list[str] = []
        self.first = 0
        self.undecodable = False

    def __iter__(self) -> _Tap:
        return self

    def __next__(self) -> str:
        number, text = next(self._lines)
        if not self.texts:
            self.first = number
        if text is None:
            self.undecodable, text = True, "\n"
        self.texts.append(text)
        return text

    def take(self) -> tuple[int, str, bool]:
        """The first line number, the text and whether any line was not UTF-8; then reset."""
        taken = (self.first, "".join(self.texts).rstrip("\r\n"), self.undecodable)
        self.texts, self.undecodable = [], False
        return taken


def _header(row: list[str], line: int) -> list[str]:
    """The canonical column names of a CSV header; ValidationError if it is unusable."""
    names: list[str] = []
    for cell in row:
        name = _CSV_COLUMNS.get(cell.strip())
        if name is None:
            expected = ", ".join(dict.fromkeys(_CSV_COLUMNS.values()))
            raise ValidationError(f"line {line}", f"unknown column {cell!r} (columns: {expected})")
        if name in names:
            raise ValidationError(f"line {line}", f"column {cell!r} appears twice")
        names.append(name)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise ValidationError(f"line {line}", f"missing column {missing[0]!r}")
    return names


def _csv_item(header: list[str], row: list[str], line: int) -> dict[str, Any] | BadLine:
    if len(row) != len(header):
        return BadLine(line, "", f"has {len(row)} cells, the header has {len(header)}")
    item: dict[str, Any] = {}
    for column, cell in zip(header, row, strict=True):
        if cell == "":
            continue  # an empty cell means the field is absent
        if column == "quantity":
            try:
                item[column] = float(cell)
            except ValueError:
                return BadLine(line, "quantity", f"must be a number, got {cell!r}")
        elif column == "metadata":
            try:
                item[column] = json.loads(cell)
            except ValueError as exc:
                return BadLine(line, "metadata", f"not valid JSON: {exc}")
        else:
            item[column] = cell
    return item


def parse_csv(lines: Iterable[Line], name: str) -> Iterator[tuple[int, dict[str, Any] | BadLine]]:
    """CSV with a header row -> ``(line, record or BadLine)``; blank rows are skipped.

    Columns: id, metricKey (or metric_key), subjectType, subjectId, quantity,
    timestamp, metadata (JSON text), source, orgId; an empty cell means absent.
    An unknown or missing required column raises ValidationError.
    """
    tap = _Tap(lines)
    reader = csv.reader(tap, strict=True)
    header: list[str] | None = None
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            number, _text, _bad = tap.take()
            yield number, BadLine(number, "", f"malformed CSV: {exc}")
            continue
        number, text, undecodable = tap.take()
        if not any(row):
            continue
        if undecodable:
            yield number, BadLine(number, "", "not valid UTF-8 text")
        elif header is None:
            header = _header(row, number)
        else:
            item = _csv_item(header, row, number)
            if isinstance(item, dict) and "id" not in item:
                item["id"] = line_id(name, number, text)
            yield number, item


def _flush(
    meter: Meter, batch: list[tuple[int, dict[str, Any]]], bad: list[BadLine], result: ImportResult
) -> list[BadLine]:
    """Record a batch's good lines; return every bad line of the batch, in line order."""
    if batch:
        try:
            outcome = meter.record_batch([item for _, item in batch])
        except ValidationError:  # find the bad lines, record the others
            good = []
            checks = meter.validate_records([item for _, item in batch])
            for (number, item), error in zip(batch, checks, strict=True):
                if error is None:
                    good.append(item)
                else:
                    bad.append(BadLine(number, error.field, error.problem))
            outcome = meter.record_batch(good)
        result.recorded += outcome.recorded
        result.duplicates += outcome.duplicates
        result.queued += outcome.queued
    result.bad += len(bad)
    return sorted(bad, key=lambda b: b.line)


def import_records(
    meter: Meter,
    parsed: Iterable[tuple[int, dict[str, Any] | BadLine]],
    *,
    batch_size: int = 50_000,
    report: Callable[[BadLine], None] | None = None,
) -> ImportResult:
    """Record the good lines of ``parsed`` in batches; ``report`` is called for each bad one.

    Example::

        with open("usage.jsonl", "rb") as f:
            result = import_records(meter, parse_jsonl(read_lines(f), "usage.jsonl"))
    """
    result = ImportResult()
    batch: list[tuple[int, dict[str, Any]]] = []
    bad: list[BadLine] = []

    def flush() -> None:
        for line in _flush(meter, batch, bad, result):
            if report is not None:
                report(line)
        batch.clear()
        bad.clear()

    for number, item in parsed:
        result.lines += 1
        if isinstance(item, BadLine):
            bad.append(item)
        else:
            batch.append((number, item))
        if len(batch) + len(bad) >= batch_size:
            flush()
    flush()
    return result
