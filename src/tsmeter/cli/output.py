"""Printing results in the format chosen with ``--format``.

Times follow one rule in every format: each is shown in the configured time zone
(``--timezone``, else ``$TSMETER_TIMEZONE``, else UTC) as ISO-8601 with its offset and every
digit it has (``2026-03-29T03:00:00+02:00``, ``2026-03-01T00:00:00.250000+00:00``), see
:func:`time_text`.

* ``table``: aligned columns for lists, ``field  value`` lines for one object. Characters
  that would reorder or hide text on a terminal (bidi controls, zero-width and other format
  characters, C0/C1 controls, line separators) show as escapes such as ``\\u202e``, and a
  backslash as ``\\\\``, so a hostile subject id cannot disguise itself or its neighbours.
* ``json``: one JSON document per command, camelCase keys: an object for one
  result, an array for a list. Quantities are exact decimals
  and are written as decimal strings with the metric's places (``"42.500000"``), never
  through a float. A value JSON cannot hold (infinity, NaN) is an error naming it,
  never non-JSON output.
* ``csv``: a header row and one row per result; nested values as JSON text. Text
  cells that a spreadsheet would run as a formula (matching ``^'*[=+\\-@\\t\\r]``) get
  one ``'`` in front, unless ``--no-csv-neutralise``
  (:func:`tsmeter.metering.reading.restore_cell` undoes it). Numbers are never changed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from enum import Enum
from typing import Any

import click

from tsmeter.cli.context import CliState
from tsmeter.domain import Model
from tsmeter.metering.reading import neutralise_cell

__all__ = [
    "Column",
    "Row",
    "cell_text",
    "emit_list",
    "emit_one",
    "format_number",
    "isatty",
    "json_fields",
    "progress",
    "table_lines",
    "time_text",
    "visible",
]

Row = Model | Mapping[str, Any]
_MAX_CELL = 60


@dataclass(frozen=True)
class Column:
    """One table column: its header and the attribute (or dict key) it shows.

    Example: ``Column("AGGREGATION", "aggregation_type")``.
    """

    header: str
    attr: str
    right: bool = False
    #: what the table shows where the value is None (e.g. ``refuse`` for a metric's rounding)
    none: str = ""


def json_fields(model: type[Model]) -> list[str]:
    """The camelCase JSON names of a model's fields, in declaration order."""
    return [info.alias or name for name, info in model.model_fields.items()]


def format_number(value: float | Decimal) -> str:
    """A number for people: a Decimal exactly as it is, with its places and never in
    exponent notation; a float's integral values without ``.0``, others rounded to 6
    decimals.

    >>> format_number(Decimal("42.500000")), format_number(Decimal("1E+3"))
    ('42.500000', '1000')
    >>> format_number(3.0), format_number(2.5), format_number(1 / 3)
    ('3', '2.5', '0.333333')
    """
    if isinstance(value, Decimal):
        return format(value, "f")
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(round(value, 6))


# Characters rendered invisibly or that reorder text: every control (Cc), format (Cf: bidi
# controls, zero-width characters, soft hyphen, BOM, tags), surrogate, private-use and
# unassigned code point, the line and paragraph separators, and the Hangul fillers.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
_SHORT_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _hidden(char: str) -> bool:
    return unicodedata.category(char) in _HIDDEN_CATEGORIES or char in _BLANK_LETTERS


def _escape(char: str) -> str:
    """A character as a visible escape, Python style (``\\t``, ``\\x1b``, ``\\u202e``)."""
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _json_escape(char: str) -> str:
    """A character as a JSON escape (a surrogate pair beyond the BMP)."""
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _pieces(text: str, *, backslash: bool = True, json_text: bool = False) -> list[str]:
    """``text`` cut into displayable pieces: plain runs and one escape per hidden character."""
    pieces: list[str] = []
    start = 0
    for i, char in enumerate(text):
        if (backslash and char == "\\") or _hidden(char):
            if start < i:
                pieces.append(text[start:i])
            if char == "\\":
                pieces.append("\\\\")
            else:
                pieces.append(_json_escape(char) if json_text else _escape(char))
            start = i + 1
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def visible(text: str, *, backslash: bool = True) -> str:
    r"""``text`` safe to show on a terminal: hidden and reordering characters as escapes.

    With ``backslash`` (the default) a backslash shows as ``\``, so an escape in the
    output always stands for a hidden character, never for text that looks like one.

    >>> print(visible("acme\u202eevil\u200b\\x"))
    acme\u202eevil\u200b\\x
    >>> print(visible("tab\there\x1b[2J"), visible("a\\b", backslash=False))
    tab\there\x1b[2J a\b
    """
    return "".join(_pieces(text, backslash=backslash))


_AN_ESCAPE = re.compile(r"\\(?:[\\tnr]|x[0-9a-f]{2}|u[0-9a-f]{4}(?:\\u[0-9a-f]{4})?|U[0-9a-f]{8})")


def _fit(pieces: Sequence[str]) -> str:
    """Join ``pieces``, cut to the cell width with an ellipsis, never inside an escape."""
    text = "".join(pieces)
    if len(text) <= _MAX_CELL:
        return text
    kept, size = [], 0
    for piece in pieces:
        room = _MAX_CELL - 1 - size
        if len(piece) > room:
            if not _AN_ESCAPE.fullmatch(piece):  # a plain run may be cut; an escape may not
                kept.append(piece[:room])
            break
        kept.append(piece)
        size += len(piece)
    return "".join(kept) + "…"


class UnprintableError(click.ClickException):
    """A result the chosen format cannot show: a number JSON cannot represent (infinity,
    NaN), or metadata nested deeper than the serialiser goes (stored before tsmeter bounded
    it). Shown as one ``Error:`` line (exit 1) instead of invalid or partial output."""


def _finite(value: Any, where: str) -> None:
    """Raise :class:`UnprintableError` naming the first non-finite number in ``value``
    (walked without recursion, so any depth is fine)."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if (isinstance(item, float) and not math.isfinite(item)) or (
            isinstance(item, Decimal) and not item.is_finite()
        ):
            raise UnprintableError(
                f"{path or 'the result'} is {item}, which JSON cannot represent "
                "(the store holds a value out of range; --format table or csv shows it)"
            )
        if isinstance(item, Mapping):  # pushed last first: found in document order
            stack.extend(
                reversed([(v, f"{path}.{k}" if path else str(k)) for k, v in item.items()])
            )
        elif isinstance(item, list | tuple):
            stack.extend(reversed([(v, f"{path}[{i}]") for i, v in enumerate(item)]))


def _json(document: Any) -> str:
    """``document`` as strict JSON text (a non-finite number: :class:`UnprintableError`)."""
    try:
        return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError:
        _finite(document, "")
        raise
    except RecursionError:
        raise _too_deep(None) from None


def _too_deep(row: Row | None) -> UnprintableError:
    """The error for a result nested too deeply to serialise, naming it when it has an id."""
    ident = _get(row, "id") if isinstance(row, Mapping | Model) and _has_id(row) else None
    which = f"record {ident!r}" if ident is not None else "a result"
    return UnprintableError(
        f"cannot print {which}: its metadata is nested too deeply to serialise "
        "(stored before tsmeter bounded metadata depth)"
    )


def _has_id(row: Row) -> bool:
    return "id" in row if isinstance(row, Mapping) else hasattr(row, "id")


def time_text(value: datetime, zone: tzinfo = UTC) -> str:
    """A time as every format prints it: ISO-8601 in ``zone`` with its offset, nothing
    dropped (microseconds when it has them).

    >>> from zoneinfo import ZoneInfo
    >>> when = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    >>> time_text(when, ZoneInfo("Europe/Paris")), time_text(when)
    ('2026-03-29T03:00:00+02:00', '2026-03-29T01:00:00+00:00')
    """
    return value.astimezone(zone).isoformat()


def _jsonable(value: Any, zone: tzinfo = UTC) -> Any:
    if isinstance(value, datetime):
        return time_text(value, zone)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):  # exact: a decimal string, as pydantic's JSON mode does
        return format(value, "f") if value.is_finite() else float(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, zone) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, zone) for v in value]
    return value


def _numbers(row: Model) -> dict[str, Decimal | float | int]:
    """The numeric fields of a model by JSON name, as Python numbers (pydantic's JSON mode
    writes Decimals as strings, which CSV must not take for text)."""
    return {
        info.alias or name: value
        for name, info in type(row).model_fields.items()
        if isinstance(value := getattr(row, name), Decimal | float | int)
        and not isinstance(value, bool)
    }


def _json_doc(row: Row, zone: tzinfo, index: int | None = None) -> dict[str, Any]:
    """``row`` for JSON output; a non-finite Decimal field (which pydantic would write as the
    string "Infinity") is an :class:`UnprintableError` naming it."""
    if isinstance(row, Model):
        for key, value in _numbers(row).items():
            if isinstance(value, Decimal) and not value.is_finite():
                where = key if index is None else f"[{index}].{key}"
                _finite({where: float(value)}, "")
    return _doc(row, zone)


def _csv_doc(row: Row, zone: tzinfo) -> dict[str, Any]:
    """``row`` for CSV output: numbers stay numbers (never neutralised as text)."""
    doc = _doc(row, zone)
    if isinstance(row, Model):
        doc.update(_numbers(row))
    else:
        doc.update({str(k): v for k, v in row.items() if isinstance(v, Decimal)})
    return doc


def _doc(row: Row, zone: tzinfo) -> dict[str, Any]:
    """``row`` as a JSON-ready dict, its times in ``zone`` (see :func:`time_text`)."""
    try:
        if isinstance(row, Model):
            doc = row.to_json_dict()
            for name, info in type(row).model_fields.items():
                if isinstance(value := getattr(row, name), datetime):
                    doc[info.alias or name] = time_text(value, zone)
            return doc
        return {str(k): _jsonable(v, zone) for k, v in row.items()}
    except RecursionError:
        raise _too_deep(row) from None
    except ValueError as exc:  # pydantic: "Maximum serialization depth exceeded"
        if "depth" not in str(exc):
            raise
        raise _too_deep(row) from None


def _get(row: Row, attr: str) -> Any:
    return row.get(attr) if isinstance(row, Mapping) else getattr(row, attr)


def cell_text(value: Any, zone: tzinfo = UTC) -> str:
    r"""A value as a table cell: hidden characters escaped (see :func:`visible`), times in
    ``zone``, cut to 60 characters with an ellipsis (never inside an escape).

    >>> print(cell_text("\u202eacme"), cell_text(2.5), cell_text(["a@x.test", "b@x.test"]))
    \u202eacme 2.5 a@x.test, b@x.test
    """
    return _fit(_cell_pieces(value, zone))


_cell = cell_text


def _cell_pieces(value: Any, zone: tzinfo) -> list[str]:
    """A value as displayable pieces (see :func:`_pieces`), before cutting to width."""
    if value is None:
        return []
    if isinstance(value, datetime):
        return [time_text(value, zone)]
    if isinstance(value, Enum):
        return _pieces(str(value.value))
    if isinstance(value, bool):
        return ["yes" if value else "no"]
    if isinstance(value, float | Decimal):
        return [format_number(value)]
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, list | tuple):
        pieces: list[str] = []
        for i, item in enumerate(value):
            pieces.extend([", "] if i else [])
            pieces.extend(_cell_pieces(item, zone))
        return pieces
    if isinstance(value, Mapping):
        # JSON text escapes its own backslashes and quotes; hidden characters get JSON escapes
        try:
            text = json.dumps(_jsonable(value, zone), separators=(",", ":"), ensure_ascii=False)
        except RecursionError:
            raise _too_deep(None) from None
        return _pieces(text, backslash=False, json_text=True)
    return _pieces(str(value))


def _csv_cell(value: Any, neutralise: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False) if value else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return neutralise_cell(value) if neutralise else value
    if isinstance(value, Decimal):
        return format_number(value)
    return str(value)


def table_lines(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]
) -> list[str]:
    """Aligned text lines: headers, a rule, then the rows (``right``: right-aligned columns).

    >>> table_lines(["KEY", "N"], [["a", "10"], ["bb", "2"]], {1})
    ['KEY   N', '---  --', 'a    10', 'bb    2']
    """
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _write_csv(state: CliState, docs: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    neutralise = state.csv_neutralise
    writer.writerow([neutralise_cell(f) if neutralise else f for f in fields])
    for doc in docs:
        writer.writerow([_csv_cell(doc.get(f), neutralise) for f in fields])
    click.echo(buffer.getvalue(), nl=False)


def emit_list(
    state: CliState,
    rows: Iterable[Row],
    columns: Sequence[Column],
    *,
    fields: Sequence[str] | None = None,
    empty: str = "Nothing found.",
) -> None:
    """Print a list of results; ``fields`` are the CSV/JSON keys (default: the first row's).

    In table format only ``columns`` are shown, and ``empty`` goes to stderr
    when there is nothing to show. Example::

        emit_list(state, meter.list_metrics(), [Column("KEY", "key")])
    """
    items = list(rows)
    zone = state.zone()
    if state.fmt == "json":
        click.echo(_json([_json_doc(r, zone, i) for i, r in enumerate(items)]))
    elif state.fmt == "csv":
        docs = [_csv_doc(r, zone) for r in items]
        _write_csv(state, docs, fields if fields is not None else list(docs[0]) if docs else [])
    elif not items:
        click.echo(empty, err=True)
    else:
        cells = [[_column_cell(c, _get(r, c.attr), zone) for c in columns] for r in items]
        right = {i for i, c in enumerate(columns) if c.right}
        for text in table_lines([visible(c.header) for c in columns], cells, right):
            click.echo(text)


def _column_cell(column: Column, value: Any, zone: tzinfo) -> str:
    return visible(column.none) if value is None and column.none else _cell(value, zone)


def emit_one(
    state: CliState,
    row: Row,
    *,
    text: str | None = None,
    none: Mapping[str, str] | None = None,
) -> None:
    """Print one result; in table format ``text`` (a sentence) if given, else field lines
    (``none``: what a field line shows for a None value, by its JSON name).

    Example: ``emit_one(state, metric)`` or ``emit_one(state, {"deleted": key}, text=...)``.
    """
    zone = state.zone()
    if state.fmt == "json":
        click.echo(_json(_json_doc(row, zone)))
    elif state.fmt == "csv":
        doc = _csv_doc(row, zone)
        _write_csv(state, [doc], list(doc))
    elif text is not None:
        click.echo("\n".join(visible(line, backslash=False) for line in text.split("\n")))
    else:
        if isinstance(row, Model):
            pairs = [
                (info.alias or name, getattr(row, name))
                for name, info in type(row).model_fields.items()
            ]
        else:
            pairs = list(row.items())
        pairs = [(visible(str(k)), v) for k, v in pairs]
        width = max(len(k) for k, _ in pairs)
        shown = none or {}
        for key, value in pairs:
            cell = shown[key] if value is None and key in shown else _cell(value, zone)
            click.echo(f"{key.ljust(width)}  {cell}".rstrip())


def isatty() -> bool:
    """Whether stderr is a terminal, i.e. whether :func:`progress` draws a bar (a command
    asks a store to count what it will do only then)."""
    return sys.stderr.isatty()


@contextmanager
def progress(
    total: int | None, label: str, *, step: int = 1
) -> Iterator[tuple[Callable[[int], None], Callable[[str], None]]]:
    """``(advance, say)``: a progress bar on stderr when stderr is a terminal (else nothing),
    and a way to print a line to stderr without garbling the bar.

    ``advance(n)`` moves the bar by ``n`` units of ``total``; the bar is redrawn
    at most every ``step`` units. Example::

        with progress(size, "Importing") as (advance, say):
            advance(len(line))
    """
    stderr = sys.stderr
    if not total or not isatty():
        yield (lambda n: None), (lambda text: click.echo(text, err=True))
        return
    with click.progressbar(length=total, label=label, file=stderr) as bar:
        pending = [0]

        def advance(n: int) -> None:
            pending[0] += n
            if pending[0] >= step:
                bar.update(pending[0])
                pending[0] = 0

        def say(text: str) -> None:
            click.echo("\r\x1b[K" + text, err=True)

        yield advance, say
        bar.update(pending[0])
