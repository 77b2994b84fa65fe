"""Importing usage records from JSON Lines or CSV, line by line, in bounded batches.

An import is one *delivery*. Every physical line of the input is accounted for:
it is a record that gets recorded, found already recorded, or reported bad as
``line N: field: problem``; or it is blank, the CSV header, or a line that
continues a quoted CSV cell. Nothing is skipped silently.

* Lines without an ``id`` get a deterministic one: UUIDv5 of the *delivery key*,
  the line number and the line's text. The default delivery key is
  ``sha256:`` and the first 32 hex digits of the SHA-256 of the whole input, so
  importing the same bytes again is a retry that records nothing new, while any
  other input (another day's file, other stdin content) is another delivery
  whose lines get other ids even where a line is identical. An explicit batch id
  (``--batch-id``) names the delivery instead: for the same bytes legitimately
  delivered twice, or for a file that grows, re-imported under a stable name.
* A CSV row that runs over several physical lines through a quoted cell and then
  turns out malformed (an unterminated quote, text after a closing quote, the
  wrong number of cells) is reported at its first line and the lines after it
  are read again as rows, so one stray quote costs one row, not the file.
* A quantity is taken as the exact decimal it is written as, never through a float:
  a JSON number (parsed straight to a Decimal), a JSON string or a CSV cell, each in
  plain ASCII decimal notation (``12``, ``-0.5``, ``1e6``). Whether it has too many
  decimal places or is too large is for its metric to say (its precision and rounding),
  in a message naming the line and ``quantity``. Other numbers (in metadata) are
  floats; one that a float cannot hold (``1e400``, or ``1e-400`` which would become 0)
  is an error, never a rounded value. JSON's ``NaN``/``Infinity`` and keys given twice
  in one object are errors.
* Text cells that ``tsmeter usage export`` neutralised against spreadsheet formula
  injection (a ``'`` put before a leading ``= + - @`` TAB or CR) get their
  original value back.
* Good lines go to :meth:`tsmeter.Meter.record_batch` in batches, so memory
  stays bounded whatever the file's size. A batch is validated as a whole
  first (one pass when the file is clean); only a batch that holds a bad
  record is checked line by line to find which.
"""

from __future__ import annotations

import csv
import decimal
import hashlib
import json
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any, Literal, Protocol

from tsmeter.cli.params import check_exact, parse_decimal_text, parse_number
from tsmeter.errors import ConflictError, ValidationError
from tsmeter.metering.meter import Meter
from tsmeter.metering.reading import restore_cell

__all__ = [
    "MAX_BATCH_ID_LENGTH",
    "MAX_LINE_BYTES",
    "BadLine",
    "ImportResult",
    "Skipped",
    "check_batch_id",
    "import_records",
    "import_stream",
    "line_id",
    "parse_csv",
    "parse_jsonl",
    "read_lines",
]

ID_NAMESPACE = uuid.UUID("eaeda685-2aa8-4d7c-925a-8ca711314a1c")
_NAMESPACE_BYTES = ID_NAMESPACE.bytes
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
MAX_LINE_BYTES = 1 << 20
"""A physical line longer than this (1 MiB) is a bad line, read past without being kept."""
MAX_BATCH_ID_LENGTH = 256
_CHUNK = 1 << 20
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
_NOT_TEXT = frozenset({"quantity", "timestamp"})  # cells never neutralised on export
_JSON_TYPES = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    Decimal: "a number",
    bool: "a boolean",
    type(None): "null",
}


@dataclass(frozen=True)
class BadLine:
    """A line that was skipped, and why: ``line 3: quantity: must be a number, got 'abc'``."""

    line: int
    field: str
    problem: str

    def __str__(self) -> str:
        where = f"line {self.line}: "
        return where + (f"{self.field}: {self.problem}" if self.field else self.problem)


@dataclass(frozen=True)
class Skipped:
    """Physical lines that hold no record: ``blank`` ones, the CSV ``header``, or lines that
    ``continued`` a quoted CSV cell of the row above (counted so every line is accounted for)."""

    kind: Literal["blank", "header", "continued"]
    lines: int = 1


Line = tuple[int, str | BadLine]  # (line number, text, or why the line cannot be read)
Parsed = tuple[int, dict[str, Any] | BadLine | Skipped]


@dataclass
class ImportResult:
    """What an import did, line by line.

    ``lines`` (physical lines read) = ``header`` + ``blank`` + ``continued`` + ``rows``, and
    ``rows`` (records found) = ``recorded`` + ``duplicates`` + ``bad``; with an outbox the
    good rows are ``queued`` for the store instead of recorded and duplicates. ``delivery`` is
    the delivery key whose ids the lines without one got.
    """

    lines: int = 0
    recorded: int = 0
    duplicates: int = 0
    bad: int = 0
    queued: int = 0
    rows: int = 0
    header: int = 0
    blank: int = 0
    continued: int = 0
    delivery: str = ""


class LineSource(Protocol):
    """A binary stream read line by line (a file, stdin, a spooled copy)."""

    def readline(self, size: int = -1, /) -> bytes:
        """At most ``size`` bytes, up to and including the next newline."""


def check_batch_id(value: object) -> str:
    """Return ``value`` if it can name a delivery: 1–256 printable characters.

    >>> check_batch_id("march-2026")
    'march-2026'
    >>> check_batch_id("a\\nb")
    Traceback (most recent call last):
    tsmeter.errors.ValidationError: batchId: must be printable text (found '\\n')
    """
    if not isinstance(value, str):
        raise ValidationError("batchId", f"must be a string, got {type(value).__name__}")
    if not value:
        raise ValidationError("batchId", "must not be empty")
    if len(value) > MAX_BATCH_ID_LENGTH:
        raise ValidationError("batchId", f"must be at most {MAX_BATCH_ID_LENGTH} characters")
    odd = next((c for c in value if not c.isprintable()), None)
    if odd is not None:
        raise ValidationError("batchId", f"must be printable text (found {odd!r})")
    return value


def line_id(delivery: str, line: int, text: str) -> str:
    """The id given to a line without one: the same for the same delivery key, line and text.

    It is ``uuid5(ID_NAMESPACE, f"{delivery}\\n{line}\\n{text}")``, formatted directly
    from the SHA-1 digest (no UUID object is built per line). A batch
    id equal to a file's name gives the ids earlier versions derived from that name.

    >>> line_id("sha256:9f86d081884c7d659a2feaa0c55ad015", 1, "{}")
    '8822f8f6-cc52-5908-8368-14c9d11f18ae'
    """
    h = hashlib.sha1(_NAMESPACE_BYTES + f"{delivery}\n{line}\n{text}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def _key(digest: Any) -> str:
    return "sha256:" + str(digest.hexdigest())[:32]


class _Hashed:
    """Reads at most ``size`` bytes of a stream and hashes them, so the bytes imported can be
    checked against the bytes whose hash named the delivery."""

    def __init__(self, stream: LineSource, size: int) -> None:
        self._stream = stream
        self._left = size
        self._hash = hashlib.sha256()

    def readline(self, size: int = -1, /) -> bytes:
        """At most ``size`` bytes up to the next newline, never past the hashed size."""
        if self._left <= 0:
            return b""
        limit = self._left if size < 0 or size > self._left else size
        data = self._stream.readline(limit)
        self._left -= len(data)
        self._hash.update(data)
        return data

    def key(self) -> str:
        """The delivery key of what was read (the rest, if any, is hashed first)."""
        while self.readline(_CHUNK):
            pass
        return _key(self._hash)


def _content_key(stream: IO[bytes]) -> tuple[str, int]:
    """Hash a seekable stream from where it stands to its end and put it back: (key, size)."""
    start = stream.tell()
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    stream.seek(start)
    return _key(digest), size


def _spool(source: IO[bytes]) -> tuple[IO[bytes], str]:
    """Copy a stream that cannot be read twice (a pipe) to a private temporary file (mode
    0600, removed when closed), hashing it on the way: (the copy, rewound; its key)."""
    copy = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it
    digest = hashlib.sha256()
    while chunk := source.read(_CHUNK):
        digest.update(chunk)
        copy.write(chunk)
    copy.seek(0)
    return copy, _key(digest)


def _seekable(stream: IO[bytes]) -> bool:
    try:
        return stream.seekable()
    except (OSError, ValueError):
        return False


def read_lines(
    stream: LineSource,
    progress: Callable[[int], None] | None = None,
    *,
    max_bytes: int = MAX_LINE_BYTES,
) -> Iterator[Line]:
    """Number and decode the lines of a binary stream (a UTF-8 byte order mark is dropped);
    a line that is not UTF-8, or longer than ``max_bytes``, comes as a :class:`BadLine`.
    ``progress`` is told how many bytes each line took."""
    number = 0
    while raw := stream.readline(max_bytes + 1):
        number += 1
        size = len(raw)
        if size > max_bytes and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # read past the rest of the line
                raw = stream.readline(_CHUNK)
                size += len(raw)
            if progress is not None:
                progress(size)
            yield number, BadLine(number, "", f"longer than {max_bytes} bytes")
            continue
        if progress is not None:
            progress(size)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield number, BadLine(number, "", "not valid UTF-8 text")
            continue
        yield number, text.removeprefix("\ufeff") if number == 1 else text


# -- JSON ------------------------------------------------------------------------------------
class _JsonProblem(ValueError):
    """A JSON text that parses but cannot be taken as written."""

    def __init__(self, problem: str, duplicate: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.duplicate = duplicate
        self.field = ""  # the record's field at fault, where known


def _float(text: str) -> float:
    value = float(text)  # JSON's grammar already is plain decimal notation
    if value != 0.0 and value - value == 0.0:  # neither 0 (underflow?) nor inf
        return value
    try:
        return parse_number(text)
    except ValueError as exc:
        raise _JsonProblem(str(exc)) from None


class _Written(Decimal):
    """A JSON number as written: the exact Decimal, and its text for messages (a number
    outside ``quantity`` becomes a float, see :func:`_settle`)."""

    text: str

    def __new__(cls, text: str) -> _Written:
        try:
            number = super().__new__(cls, text)
        except decimal.InvalidOperation:  # an exponent beyond what a Decimal holds
            raise _JsonProblem(f"{text[:40]!r} is out of range") from None
        number.text = text
        return number


_JSON_TYPES[_Written] = "a number"


def _floats(value: Any) -> Any:
    """``value`` with every :class:`_Written` number in it as a float (walked without
    recursion: any depth the parser took is fine)."""
    if isinstance(value, _Written):
        return _float(value.text)
    stack = [value] if isinstance(value, dict | list) else []
    while stack:
        node = stack.pop()
        for key, item in node.items() if isinstance(node, dict) else enumerate(node):
            if isinstance(item, _Written):
                node[key] = _float(item.text)
            elif isinstance(item, dict | list):
                stack.append(item)
    return value


def _quantity_of(value: Any) -> Any:
    """A record's ``quantity`` as an exact Decimal if it is a number or a numeric string;
    anything else (a boolean, null, an array) is left for the Meter to refuse by type."""
    try:
        if isinstance(value, _Written):
            return check_exact(Decimal(value), value.text)
        if isinstance(value, str):
            return parse_decimal_text(value.strip(" \t"))
    except ValueError as exc:
        raise _JsonProblem(str(exc)) from None
    return value


def _settle(item: dict[str, Any]) -> None:
    """Make a parsed record's numbers what the Meter takes, in place: ``quantity`` an exact
    Decimal, every other number a float; :class:`_JsonProblem` naming the field if one
    cannot be taken as written."""
    for key, value in item.items():
        try:
            if key == "quantity":
                item[key] = _quantity_of(value)
            elif isinstance(value, _Written | dict | list):
                item[key] = _floats(value)
        except _JsonProblem as exc:
            exc.field = key
            raise


def _constant(name: str) -> float:
    raise _JsonProblem(f"{name} is not a JSON number")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _JsonProblem(f"key {key!r} appears twice in one object", key)
            seen.add(key)
    return obj


def _loads(text: str) -> Any:
    """Strict JSON: numbers kept as written or refused, no NaN/Infinity, no repeated keys;
    every number with a fraction or an exponent is a float (metadata)."""
    return _floats(_loads_exact(text))


def _loads_exact(text: str) -> Any:
    """Like :func:`_loads`, numbers with a fraction or an exponent as :class:`_Written`."""
    return json.loads(
        text, parse_float=_Written, parse_constant=_constant, object_pairs_hook=_object
    )


class _Mark:
    """Stands where a value could not be taken, to find which field holds it."""


def _field_of(text: str, problem: _JsonProblem) -> str:
    """The top-level field of a JSON object that holds the value ``problem`` is about."""

    def mark_number(number: str) -> object:
        try:
            Decimal(number)
        except decimal.InvalidOperation:
            return _Mark()
        return 0

    def mark_object(pairs: list[tuple[str, Any]]) -> object:
        return _Mark() if len(dict(pairs)) != len(pairs) else dict(pairs)

    try:
        top = json.loads(
            text,
            parse_float=mark_number,
            parse_constant=lambda _: _Mark(),
            object_pairs_hook=mark_object,
        )
    except (ValueError, RecursionError):  # something later on the line is wrong as well
        return ""
    if isinstance(top, _Mark):
        return problem.duplicate or ""
    if not isinstance(top, dict):
        return ""
    for key, value in top.items():
        stack = [value]
        while stack:
            node = stack.pop()
            if isinstance(node, _Mark):
                return str(key)
            if isinstance(node, dict):
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return ""


def parse_jsonl(lines: Iterable[Line], delivery: str) -> Iterator[Parsed]:
    """One JSON object per line -> ``(line, record, BadLine or Skipped)``; records without an
    id get :func:`line_id` of ``delivery``, the line number and the line's text."""
    for number, text in lines:
        if isinstance(text, BadLine):
            yield number, text
            continue
        body = text.rstrip("\r\n")
        if not body.strip():
            yield number, Skipped("blank")
            continue
        try:
            item = _loads_exact(body)
        except json.JSONDecodeError as exc:
            yield number, BadLine(number, "", f"not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        except _JsonProblem as exc:
            yield number, BadLine(number, _field_of(body, exc), exc.problem)
            continue
        except RecursionError:
            yield number, BadLine(number, "", "not valid JSON: nested too deeply")
            continue
        except ValueError as exc:  # e.g. an integer of more than 4,300 digits
            yield number, BadLine(number, "", f"not valid JSON: {exc}")
            continue
        if not isinstance(item, dict):
            got = _JSON_TYPES.get(type(item), type(item).__name__)
            yield number, BadLine(number, "", f"must be a JSON object, got {got}")
            continue
        try:
            _settle(item)
        except _JsonProblem as exc:
            yield number, BadLine(number, exc.field, exc.problem)
            continue
        if item.get("id") is None:
            item["id"] = line_id(delivery, number, body)
        yield number, item


# -- CSV -------------------------------------------------------------------------------------
class _Tap:
    """Feeds lines to :func:`csv.reader`, remembers those that made up the last row, and can
    put lines back to be read again."""

    def __init__(self, lines: Iterable[Line]) -> None:
        self._lines = iter(lines)
        self._back: list[Line] = []  # lines to read again, the next one last
        self.taken: list[Line] = []
        self.unreadable: BadLine | None = None  # the first unreadable line of the last row

    def __iter__(self) -> _Tap:
        return self

    def __next__(self) -> str:
        line = self._back.pop() if self._back else next(self._lines)
        self.taken.append(line)
        text = line[1]
        if isinstance(text, BadLine):
            if self.unreadable is None:
                self.unreadable = text
            return "\n"
        return text

    def take(self) -> tuple[list[Line], BadLine | None]:
        """The lines of the last row and its first unreadable one; then forget them."""
        taken, unreadable = self.taken, self.unreadable
        self.taken, self.unreadable = [], None
        return taken, unreadable

    def again(self, lines: list[Line]) -> None:
        """Read ``lines`` again, in order, before any new line."""
        self._back.extend(reversed(lines))


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


def _quantity(cell: str, line: int) -> Decimal | BadLine:
    """A plain ASCII decimal (spaces and tabs around it are ignored) as the exact Decimal it
    says, or why not."""
    try:
        return parse_decimal_text(cell.strip(" \t"))
    except ValueError as exc:
        return BadLine(line, "quantity", str(exc))


def _csv_item(
    header: list[str], row: list[str], line: int, neutralised: bool
) -> dict[str, Any] | BadLine:
    item: dict[str, Any] = {}
    for column, cell in zip(header, row, strict=True):
        if cell == "":
            continue  # an empty cell means the field is absent
        if neutralised and cell[0] == "'" and column not in _NOT_TEXT:
            cell = restore_cell(cell)
        if column == "quantity":
            number = _quantity(cell, line)
            if isinstance(number, BadLine):
                return number
            item[column] = number
        elif column == "metadata":
            try:
                item[column] = _loads(cell)
            except _JsonProblem as exc:
                return BadLine(line, "metadata", exc.problem)
            except RecursionError:
                return BadLine(line, "metadata", "not valid JSON: nested too deeply")
            except ValueError as exc:
                return BadLine(line, "metadata", f"not valid JSON: {exc}")
        else:
            item[column] = cell
    return item


def _csv_problem(exc: csv.Error, lines: int) -> str:
    """A CSV syntax error in words; ``lines``: how many physical lines the row took."""
    text = str(exc)
    if "unexpected end of data" in text:
        problem = "unterminated quoted cell (its closing quote is missing)"
    elif "expected after" in text:
        problem = "a quoted cell must end at a delimiter or the end of the line"
    elif "field larger than field limit" in text:
        problem = f"a cell is longer than {csv.field_size_limit()} characters"
    else:
        problem = f"malformed CSV: {text}"
    if lines > 1:
        problem += "; the lines after it are read again as rows"
    return problem


def parse_csv(
    lines: Iterable[Line], delivery: str, *, neutralised: bool = True
) -> Iterator[Parsed]:
    """CSV with a header row -> ``(line, record, BadLine or Skipped)``; a row is reported at
    its first physical line.

    Columns: id, metricKey (or metric_key), subjectType, subjectId, quantity,
    timestamp, metadata (JSON text), source, orgId; an empty cell means absent.
    An unknown or missing required column raises ValidationError. With
    ``neutralised``, text cells get back the value export's
    :func:`~tsmeter.metering.reading.neutralise_cell` changed.
    Records without an id get :func:`line_id` of ``delivery``, the row's first line
    number and its text.
    """
    tap = _Tap(lines)
    reader = csv.reader(tap, strict=True)
    header: list[str] | None = None
    while True:
        error: csv.Error | None = None
        row: list[str] = []
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            error = exc
        taken, unreadable = tap.take()
        first = taken[0][0]
        more = len(taken) - 1
        if error is not None and header is None:
            raise ValidationError(f"line {first}", _csv_problem(error, 1) + " in the header")
        if error is not None or (header is not None and more and len(row) != len(header)):
            tap.again(taken[1:])  # a quote opened on the first line swallowed the others
            if error is not None:
                problem = _csv_problem(error, len(taken))
            else:
                problem = (
                    f"has {len(row)} cells over {len(taken)} lines, the header has "
                    f"{len(header or ())}; the lines after it are read again as rows"
                )
            yield first, BadLine(first, "", problem)
            continue
        if unreadable is not None:
            where = "" if unreadable.line == first else f" (line {unreadable.line} of the row)"
            yield first, BadLine(first, "", unreadable.problem + where)
        elif not any(row):
            yield first, Skipped("blank")
        elif header is None:
            header = _header(row, first)
            yield first, Skipped("header")
        elif len(row) != len(header):
            yield first, BadLine(first, "", f"has {len(row)} cells, the header has {len(header)}")
        else:
            item = _csv_item(header, row, first, neutralised)
            if isinstance(item, dict) and "id" not in item:
                text = str(taken[0][1]) if not more else "".join(str(t) for _, t in taken)
                text = text.rstrip("\r\n")
                item["id"] = line_id(delivery, first, text)
            yield first, item
        if more:
            yield first, Skipped("continued", more)


# -- recording -------------------------------------------------------------------------------
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
    parsed: Iterable[Parsed],
    *,
    batch_size: int = 50_000,
    report: Callable[[BadLine], None] | None = None,
) -> ImportResult:
    """Record the good rows of ``parsed`` in batches; ``report`` is called for each bad one.

    Example::

        with open("usage.jsonl", "rb") as f:
            result = import_records(meter, parse_jsonl(read_lines(f), "usage-2026-03-01"))
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
        if isinstance(item, Skipped):
            result.lines += item.lines
            setattr(result, item.kind, getattr(result, item.kind) + item.lines)
            continue
        result.lines += 1
        result.rows += 1
        if isinstance(item, BadLine):
            bad.append(item)
        else:
            batch.append((number, item))
        if len(batch) + len(bad) >= batch_size:
            flush()
    flush()
    return result


def import_stream(
    meter: Meter,
    stream: IO[bytes],
    fmt: Literal["jsonl", "csv"],
    *,
    batch_id: str | None = None,
    neutralised: bool = True,
    batch_size: int = 50_000,
    report: Callable[[BadLine], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import a binary stream (a file, stdin) as one delivery; see the module's docstring.

    Without ``batch_id`` the delivery key is the hash of the stream's bytes: a seekable
    stream is read twice (hashed, then imported), any other is first copied to a private
    temporary file. ConflictError if the bytes changed between the two readings (the
    rows already recorded then carry the first key: import again with it as ``batch_id``).

    Example::

        with open("usage.csv", "rb") as f:
            print(import_stream(meter, f, "csv").delivery)
    """
    spooled: IO[bytes] | None = None
    checked: _Hashed | None = None
    source: LineSource = stream
    try:
        if batch_id is not None:
            key = check_batch_id(batch_id)
        elif _seekable(stream):
            key, size = _content_key(stream)
            source = checked = _Hashed(stream, size)
        else:
            spooled, key = _spool(stream)
            source = spooled
        lines = read_lines(source, progress)
        parsed = (
            parse_csv(lines, key, neutralised=neutralised)
            if fmt == "csv"
            else parse_jsonl(lines, key)
        )
        result = import_records(meter, parsed, batch_size=batch_size, report=report)
        result.delivery = key
        if checked is not None and checked.key() != key:
            raise ConflictError(
                f"the input changed while it was imported; the records taken from it carry "
                f"delivery {key}: import it again with --batch-id {key} (batch_id in Python)"
            )
        return result
    finally:
        if spooled is not None:
            spooled.close()
