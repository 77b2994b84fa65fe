"""Printing results in the format chosen with ``--format``.

* ``table``: aligned columns for lists, ``field  value`` lines for one object;
  times are shown in the configured time zone.
* ``json``: one JSON document per command, camelCase keys: an object for one
  result, an array for a list (times in UTC, ISO-8601).
* ``csv``: a header row and one row per result; nested values as JSON text.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from enum import Enum
from typing import Any

import click

from tsmeter.cli.context import CliState
from tsmeter.domain import Model

__all__ = [
    "Column",
    "Row",
    "emit_list",
    "emit_one",
    "format_number",
    "json_fields",
    "progress",
    "table_lines",
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


def json_fields(model: type[Model]) -> list[str]:
    """The camelCase JSON names of a model's fields, in declaration order."""
    return [info.alias or name for name, info in model.model_fields.items()]


def format_number(value: float) -> str:
    """A number for people: integral values without ``.0``, others rounded to 6 decimals.

    >>> format_number(3.0), format_number(2.5), format_number(1 / 3)
    ('3', '2.5', '0.333333')
    """
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(round(value, 6))


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _doc(row: Row) -> dict[str, Any]:
    if isinstance(row, Model):
        return row.to_json_dict()
    return {str(k): _jsonable(v) for k, v in row.items()}


def _get(row: Row, attr: str) -> Any:
    return row.get(attr) if isinstance(row, Mapping) else getattr(row, attr)


def _cell(value: Any, zone: tzinfo) -> str:
    """A value as a table cell."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(zone).isoformat(sep=" ", timespec="seconds")
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        text = ", ".join(_cell(v, zone) for v in value)
    elif isinstance(value, Mapping):
        text = json.dumps(_jsonable(value), separators=(",", ":"), ensure_ascii=False)
    else:
        text = str(value)
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False) if value else ""
    if isinstance(value, bool):
        return "true" if value else "false"
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


def _write_csv(docs: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    for doc in docs:
        writer.writerow([_csv_cell(doc.get(f)) for f in fields])
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
    if state.fmt == "json":
        click.echo(json.dumps([_doc(r) for r in items], indent=2, ensure_ascii=False))
    elif state.fmt == "csv":
        docs = [_doc(r) for r in items]
        _write_csv(docs, fields if fields is not None else list(docs[0]) if docs else [])
    elif not items:
        click.echo(empty, err=True)
    else:
        zone = state.zone()
        cells = [[_cell(_get(r, c.attr), zone) for c in columns] for r in items]
        right = {i for i, c in enumerate(columns) if c.right}
        for text in table_lines([c.header for c in columns], cells, right):
            click.echo(text)


def emit_one(state: CliState, row: Row, *, text: str | None = None) -> None:
    """Print one result; in table format ``text`` (a sentence) if given, else field lines.

    Example: ``emit_one(state, metric)`` or ``emit_one(state, {"deleted": key}, text=...)``.
    """
    if state.fmt == "json":
        click.echo(json.dumps(_doc(row), indent=2, ensure_ascii=False))
    elif state.fmt == "csv":
        doc = _doc(row)
        _write_csv([doc], list(doc))
    elif text is not None:
        click.echo(text)
    else:
        zone = state.zone()
        if isinstance(row, Model):
            pairs = [
                (info.alias or name, getattr(row, name))
                for name, info in type(row).model_fields.items()
            ]
        else:
            pairs = list(row.items())
        width = max(len(k) for k, _ in pairs)
        for key, value in pairs:
            click.echo(f"{key.ljust(width)}  {_cell(value, zone)}".rstrip())


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
    if not total or not stderr.isatty():
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
