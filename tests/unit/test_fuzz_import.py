"""Fuzzing the import path: whatever the bytes, every line is accounted for and nothing else.

Good rows are built from hostile names, numbers spelled in every accepted way and metadata,
then mixed with broken rows (stray quotes, unreadable numbers, deep nesting, bytes that are not
UTF-8, wrong cell counts), blank lines, CRLF and byte order marks. The store is read back to
check each recorded record field by field against the row it came from.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tsmeter
from tests.hostile import metadata, names
from tsmeter import Meter
from tsmeter.cli.importer import BadLine, ImportResult, import_stream
from tsmeter.cli.main import cli
from tsmeter.errors import ValidationError
from tsmeter.metering.reading import neutralise_cell

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
METRICS = ("=calc", "api'-odd", "storage")
COLUMNS = ("id", "metricKey", "subjectType", "subjectId", "quantity", "timestamp", "metadata",
           "source")  # fmt: skip
TIMESTAMPS = ("2026-01-05T10:00:00Z", "2026-01-05T11:30:00.123456+02:00", "1999-12-31T23:59:59Z")
ROW = "row#"  # metadata key that ties a stored record to the row it came from


@contextmanager
def fresh_meter() -> Iterator[Meter]:
    """An in-memory embedded store with three SUM metrics, one per example."""
    with tsmeter.connect("sqlite:///:memory:") as meter:
        for key in METRICS:
            meter.define_metric(key, aggregation_type="SUM")
        yield meter


def physical_lines(data: bytes) -> int:
    """How many lines a reader splitting at ``\\n`` sees in ``data``."""
    return 0 if not data else data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def run(
    meter: Meter, data: bytes, fmt: Literal["jsonl", "csv"]
) -> tuple[ImportResult, list[BadLine]]:
    """Import ``data``; the result and the bad lines reported, after checking the accounts."""
    bad: list[BadLine] = []
    result = import_stream(meter, io.BytesIO(data), fmt, report=bad.append, batch_size=7)
    assert result.lines == physical_lines(data), result
    assert result.lines == result.header + result.blank + result.continued + result.rows
    assert result.rows == result.recorded + result.duplicates + result.bad, result
    assert len(bad) == result.bad == len({b.line for b in bad})
    assert all(1 <= b.line <= result.lines for b in bad)
    return result, bad


# exact decimals of at most 6 places (the metrics' precision), small and near the range
quantities = st.one_of(
    st.integers(-4_000_000, 4_000_000).map(lambda n: Decimal(n) / 4),
    st.decimals(min_value=-(10**12), max_value=10**12, places=6),
    st.sampled_from([Decimal("0.1"), Decimal("0.01"), Decimal("0.000001"), Decimal("-0.000001"),
                     Decimal("9223372036854.775807"), Decimal("1E+3"), Decimal("0E-6")]),
)  # fmt: skip


@st.composite
def good_rows(draw: st.DrawFn, count: int) -> list[dict[str, Any]]:
    """Valid records (camelCase) with hostile text; the row number is in their metadata."""
    rows = []
    for i in range(count):
        meta = draw(st.none() | metadata)
        row: dict[str, Any] = {
            "metricKey": draw(st.sampled_from(METRICS)),
            "subjectType": draw(names),
            "subjectId": draw(names),
            "quantity": draw(quantities),
            "timestamp": draw(st.sampled_from(TIMESTAMPS)),
            "metadata": {**(json.loads(meta) if meta else {}), ROW: i},
        }
        if draw(st.booleans()):
            row["id"] = f"{i}|{draw(names)}"[:256]
        if draw(st.booleans()):
            row["source"] = draw(names)
        rows.append(row)
    return rows


def number_text(draw: st.DrawFn, value: Decimal) -> str:
    """``value`` spelled exactly in one of the ways a CSV cell may write it."""
    fixed = f"{value:f}"
    padded = fixed + ("0" if "." in fixed else ".0")  # a trailing zero changes no value
    text = draw(st.sampled_from([str(value), fixed, f"{value:e}", f"+{value}", padded]))
    text = text.replace("+-", "-").replace("e", draw(st.sampled_from("eE")))
    return draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", " "]))


def check_recorded(meter: Meter, rows: list[dict[str, Any]]) -> set[int]:
    """Every stored record equals the row whose number it carries; return those numbers."""
    seen: set[int] = set()
    for key in METRICS:
        for record in meter.get_usage(key, limit=None):
            number = record.metadata.get(ROW)
            assert isinstance(number, int) and number not in seen, record
            seen.add(number)
            row = rows[number]
            assert record.metric_key == row["metricKey"]
            assert (record.subject_type, record.subject_id) == (
                row["subjectType"],
                row["subjectId"],
            )
            assert record.quantity == row["quantity"]
            expected = datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00"))
            assert record.timestamp == expected.astimezone(UTC)
            assert record.metadata == row["metadata"]
            assert record.source == row.get("source")
            if "id" in row:
                assert record.id == row["id"]
    return seen


# -- JSON Lines ------------------------------------------------------------------------------
BAD_JSON = st.sampled_from([
    "not json {", "[1, 2]", '"text"', "null", '{"quantity": NaN}', "[" * 3000 + "]" * 3000,
    '{"metricKey": "storage", "metricKey": "storage"}', '{"metadata": ' + "{\"a\":" * 2000,
    "1" * 5000, '{"quantity": 1e999}', '{"quantity": 1e-999, "m": ' + "1" * 5000 + "}",
])  # fmt: skip
BLANK = st.sampled_from(["", " ", "\t", "  \t "])


@st.composite
def jsonl_inputs(draw: st.DrawFn) -> tuple[bytes, list[dict[str, Any]], set[int], set[int]]:
    """(bytes, good rows, numbers of the good rows placed, lines of broken rows)."""
    rows = draw(good_rows(draw(st.integers(0, 12))))
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    parts: list[bytes] = []
    placed: set[int] = set()
    broken: set[int] = set()
    pending = list(range(len(rows)))
    while pending or draw(st.integers(0, 3)) == 3:
        kind = draw(st.sampled_from(["good", "good", "bad", "bytes", "blank", "tiny"]))
        line = len(parts) + 1
        if kind == "good" and pending:
            i = pending.pop(0)
            row = {**rows[i], "quantity": "\x00q"}
            text = json.dumps(row, ensure_ascii=draw(st.booleans()))
            number = number_text(draw, rows[i]["quantity"]).strip(" \t").lstrip("+")
            if draw(st.booleans()):  # a JSON number, or the decimal as a JSON string
                number = json.dumps(number)
            parts.append(text.replace('"\\u0000q"', number).encode())
            placed.add(i)
        elif kind == "bad":
            parts.append(draw(BAD_JSON).encode())
            broken.add(line)
        elif kind == "tiny":  # a good row whose quantity underflows: must be refused
            item = {**rows[0], "quantity": 1.0} if rows else {"metricKey": "storage"}
            item = {k: str(v) if isinstance(v, Decimal) else v for k, v in item.items()}
            text = json.dumps(item).replace('"quantity": 1.0', '"quantity": 1e-400')
            parts.append(text.encode())
            broken.add(line)
        elif kind == "bytes":
            raw = draw(st.binary(max_size=40)).replace(b"\n", b"")
            parts.append(raw)
            broken.add(line)
        elif kind == "blank":
            parts.append(draw(BLANK).encode())
        if len(parts) > 40:
            break
    data = newline.join(parts) + (newline if draw(st.booleans()) else b"")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data, rows, placed, broken


@FUZZ
@given(jsonl_inputs())
def test_jsonl_lines_are_all_accounted_for(
    case: tuple[bytes, list[dict[str, Any]], set[int], set[int]],
) -> None:
    """Every good JSON line is recorded exactly as written; every broken one is reported."""
    data, rows, placed, broken = case
    with fresh_meter() as meter:
        _, bad = run(meter, data, "jsonl")
        recorded = check_recorded(meter, rows)
    assert {b.line for b in bad} <= broken  # random bytes may also be blank
    assert recorded == placed


# -- CSV -------------------------------------------------------------------------------------
BAD_CELLS = st.sampled_from([
    "1_000", "\u0661\u0662", "1e-400", "1e400", "nan", "inf", "0x10", "1,5", "\u00a012", "12abc",
])  # fmt: skip


def csv_line(cells: list[str]) -> str:
    """One CSV row as csv.writer writes it, without its line end."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue()[:-1]


@st.composite
def csv_inputs(draw: st.DrawFn) -> tuple[bytes, list[dict[str, Any]], set[int], set[int]]:
    """(bytes, good rows, numbers of the good rows placed, lines of broken rows)."""
    rows = draw(good_rows(draw(st.integers(0, 12))))
    columns = list(draw(st.permutations(COLUMNS)))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines: list[str] = [",".join(columns)]
    placed: set[int] = set()
    broken: set[int] = set()
    pending = list(range(len(rows)))

    def cells(row: dict[str, Any]) -> list[str]:
        out = []
        for column in columns:
            value = row.get(column)
            if value is None:
                out.append("")
            elif column == "quantity":
                out.append(number_text(draw, value))
            elif column == "metadata":
                out.append(json.dumps(value, ensure_ascii=draw(st.booleans())))
            elif column == "timestamp":
                out.append(value)
            else:
                out.append(neutralise_cell(value))
        return out

    while pending or draw(st.integers(0, 3)) == 3:
        kind = draw(st.sampled_from(["good", "good", "number", "quote", "cells", "blank", "deep"]))
        line = len(lines) + 1
        if kind == "good" and pending:
            placed.add(pending[0])
            lines.append(csv_line(cells(rows[pending.pop(0)])))
        elif kind == "number" and rows:
            bad_row = cells({**rows[0], "id": None})
            bad_row[columns.index("quantity")] = draw(BAD_CELLS)
            lines.append(csv_line(bad_row))
            broken.add(line)
        elif kind == "quote" and rows:
            stray = cells({**rows[0], "id": None})
            at = columns.index(
                draw(st.sampled_from([c for c in columns if c not in ("quantity", "metadata")]))
            )
            before, after = csv_line(stray[:at]), csv_line(stray[at + 1 :])
            pieces = [
                *([before] if at else []),
                '"acme',
                *([after] if at + 1 < len(columns) else []),
            ]
            lines.append(",".join(pieces))  # a quote opened and not closed on this line
            broken.add(line)
        elif kind == "cells":
            lines.append(",".join(draw(st.lists(st.sampled_from(["a", "1", ""]), max_size=5))))
            broken.add(line)
        elif kind == "deep" and rows:
            deep = cells({**rows[0], "id": None})
            deep[columns.index("metadata")] = "[" * 5000 + "]" * 5000
            lines.append(csv_line(deep))
            broken.add(line)
        elif kind == "blank":
            lines.append(draw(st.sampled_from(["", ",,,,,,,"])))
        if len(lines) > 40:
            break
    data = (newline.join(lines) + newline).encode()
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data, rows, placed, broken


@FUZZ
@given(csv_inputs())
def test_csv_rows_are_all_accounted_for(
    case: tuple[bytes, list[dict[str, Any]], set[int], set[int]],
) -> None:
    """Good CSV rows (neutralised text, numbers spelled many ways) are recorded exactly; bad
    rows are reported at their own line; a good row is missing only if counted as a line
    inside a quoted cell of a broken row."""
    data, rows, placed, broken = case
    with fresh_meter() as meter:
        result, bad = run(meter, data, "csv")
        recorded = check_recorded(meter, rows)
    assert result.header == 1
    assert {b.line for b in bad} <= broken, [str(b) for b in bad]
    assert recorded <= placed
    assert len(placed) - len(recorded) <= result.continued
    if not broken:
        assert recorded == placed and result.continued == 0


# -- anything at all -------------------------------------------------------------------------
PIECES = st.sampled_from([
    b'"', b",", b"\n", b"\r\n", b"\r", b"\xff", b"\xef\xbb\xbf", b"{", b"}", b"[", b"1e-400",
    b"=", b"'", b"\x00", b"\xe2\x80\xae", b"api_calls", b"storage", b"org", b"  ",
])  # fmt: skip
HEADERS = st.sampled_from([b"", b"metricKey,subjectType,subjectId,quantity,metadata\n",
                           b"subject_id,metric_key,subject_type\r\n"])  # fmt: skip


@FUZZ
@given(HEADERS, st.lists(st.one_of(PIECES, st.binary(max_size=8)), max_size=60), st.booleans())
def test_any_bytes_give_an_account_or_a_validation_error(
    header: bytes, pieces: list[bytes], as_csv: bool
) -> None:
    """Random bytes are imported or refused with a ValidationError (a bad CSV header), never
    another exception, and every line is accounted for."""
    data = header + b"".join(pieces)
    with fresh_meter() as meter:
        try:
            run(meter, data, "csv" if as_csv else "jsonl")
        except ValidationError as exc:
            assert as_csv and exc.field.startswith("line "), exc


# -- the CLI's own option --------------------------------------------------------------------
@FUZZ
@given(st.text(max_size=300))
def test_any_batch_id_is_used_or_refused_in_one_line(batch_id: str) -> None:
    """A random --batch-id either names the delivery or is one ``Error:`` line."""
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as top:
        path, store = Path(top) / "usage.jsonl", f"sqlite:///{Path(top) / 'x.db'}"
        path.write_text(json.dumps({"metricKey": "storage", "subjectType": "o",
                                    "subjectId": "s", "quantity": 1}) + "\n")  # fmt: skip
        runner.invoke(cli, ["--store", store, "metric", "define", "storage"])
        result = runner.invoke(
            cli, ["--store", store, "usage", "import", str(path), "--batch-id", batch_id]
        )
        assert "Traceback" not in result.output
        if result.exit_code == 0:
            assert f"delivery {batch_id}" in result.stdout
        else:
            assert isinstance(result.exception, SystemExit), result.exception
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
