"""``tsmeter usage import``: bad lines reported one by one, good lines recorded exactly once."""

from __future__ import annotations

import hashlib
import json
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from tests.cli.conftest import Cli, one_line_error

GOOD = {
    "metricKey": "api_calls",
    "subjectType": "org",
    "subjectId": "o1",
    "timestamp": "2026-01-05T10:00:00Z",
}


def jsonl(*items: object) -> str:
    """JSON Lines text: dicts are dumped, strings are taken as the raw line."""
    return "".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items)


def write(path: Path, text: str) -> str:
    """Write ``text`` to ``path`` and return its name."""
    path.write_text(text, encoding="utf-8")
    return str(path)


def bad_lines(stderr: str) -> list[str]:
    """The ``line N: ...`` reports in a command's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("line ")]


MIXED = jsonl(
    GOOD,
    GOOD,  # the same text on another line is another record
    "",
    {**GOOD, "metricKey": "foo"},
    "not json",
    [1, 2],
    {**GOOD, "metricKey": "storage_gb", "quantity": "abc"},
    {**GOOD, "timestamp": "2026-01-05T10:00:00"},
    {**GOOD, "quantiy": 2},
    {**GOOD, "subjectId": ["o1"]},
    {**GOOD, "id": "given-1", "metricKey": "storage_gb", "quantity": 7},
)


def test_bad_lines_are_reported_and_good_ones_recorded_once(metered: Cli, tmp_path: Path) -> None:
    """Each bad line is reported with its number and field; re-running records nothing new."""
    path = write(tmp_path / "usage.jsonl", MIXED)
    result = metered("usage", "import", path)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert bad_lines(result.stderr) == [
        "line 4: metricKey: unknown metric 'foo'",
        "line 5: not valid JSON: Expecting value (column 1)",
        "line 6: must be a JSON object, got an array",
        "line 7: quantity: expected a finite number in plain decimal notation (12, -3.5, 1e6), "
        "got 'abc'",
        "line 8: timestamp: must carry a time zone (naive timestamp '2026-01-05T10:00:00' "
        "rejected)",
        "line 9: quantiy: unknown field",
        "line 10: subjectId: must be a string, got list",
    ]
    assert result.stderr.splitlines()[-1] == (
        f"Error: 7 of 10 lines in {path} were bad and skipped (listed above); "
        "the other 3 are recorded"
    )
    key = "sha256:" + hashlib.sha256(MIXED.encode()).hexdigest()[:32]
    assert result.stdout.strip() == (
        f"{path}: 11 lines = 10 records (3 new, 0 already recorded, 7 bad) + 1 blank; "
        f"delivery {key}"
    )
    assert len(metered.json("usage", "get", "api_calls")) == 2
    assert [d["id"] for d in metered.json("usage", "get", "storage_gb")] == ["given-1"]
    again = metered("--format", "json", "usage", "import", path)
    assert again.exit_code == 1
    assert json.loads(again.stdout) == {
        "file": path,
        "delivery": key,
        "lines": 11,
        "header": 0,
        "blank": 1,
        "continued": 0,
        "rows": 10,
        "recorded": 0,
        "duplicates": 3,
        "queued": 0,
        "bad": 7,
    }
    assert len(metered.json("usage", "get", "api_calls")) == 2


@pytest.mark.parametrize("batch_size", ["1", "2", "3", "50000"])
def test_batch_size_does_not_change_the_outcome(
    metered: Cli, tmp_path: Path, batch_size: str
) -> None:
    """Bad lines spread over several batches are found, and the good ones all recorded."""
    path = write(tmp_path / "usage.jsonl", MIXED)
    result = metered("usage", "import", path, "--batch-size", batch_size)
    assert result.exit_code == 1
    assert [line.split(":")[0] for line in bad_lines(result.stderr)] == [
        f"line {n}" for n in range(4, 11)
    ]
    assert len(metered.json("usage", "get", "api_calls")) == 2
    assert len(metered.json("usage", "get", "storage_gb")) == 1


def test_clean_file_in_batches(metered: Cli, tmp_path: Path) -> None:
    """A large clean file goes in batches; a re-run reports every line already recorded."""
    lines = [
        {**GOOD, "subjectId": f"o{i % 7}", "timestamp": f"2026-01-05T10:{i % 60:02d}:00Z"}
        for i in range(3000)
    ]
    path = write(tmp_path / "big.ndjson", jsonl(*lines))
    first = metered.json("usage", "import", path, "--batch-size", "1000")
    assert (first["lines"], first["recorded"], first["duplicates"]) == (3000, 3000, 0)
    second = metered.ok("usage", "import", path).stdout
    assert second.startswith(
        f"{path}: 3000 lines = 3000 records (0 new, 3000 already recorded, 0 bad); delivery "
    )
    assert second.strip().endswith("(this content was imported before: if it is a new "
                                   "delivery, use --batch-id)")  # fmt: skip
    monthly = metered.json(
        "usage",
        "summary",
        "api_calls",
        "--period",
        "monthly",
        "--from",
        "2026-01-01",
        "--to",
        "2026-02-01",
    )
    assert sum(Decimal(d["totalQuantity"]) for d in monthly) == 3000


CSV = (
    "id,metric_key,subjectType,subjectId,quantity,timestamp,metadata,source,orgId\n"
    ",api_calls,org,o2,,2026-01-07T10:00:00Z,,,\n"
    'c2,storage_gb,org,o2,12.5,2026-01-07T10:00:00Z,"{""tier"": ""gold""}",csv,\n'
    "\n"
    "c3,storage_gb,org,o2,twelve,2026-01-07T10:00:00Z,,,\n"
    "c4,storage_gb,org,o2,1,2026-01-07T10:00:00Z,{bad,,\n"
    "c5,storage_gb,org,o2,1\n"
    '"multi\nline",api_calls,org,o3,,2026-01-07T10:00:00Z,,,\n'
    "c6,storage_gb,org,o3,2,2026-01-07T11:00:00+01:00,,,\n"
)


def test_csv_import(metered: Cli, tmp_path: Path) -> None:
    """CSV: snake or camel headers, empty cells absent, numbers and JSON parsed per cell."""
    path = write(tmp_path / "usage.csv", CSV)
    result = metered("usage", "import", path)
    assert result.exit_code == 1
    assert bad_lines(result.stderr) == [
        "line 5: quantity: expected a finite number in plain decimal notation (12, -3.5, 1e6), "
        "got 'twelve'",
        "line 6: metadata: not valid JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)",
        "line 7: has 5 cells, the header has 9",
        "line 8: id: must not contain control characters (found '\\n')",
    ]
    storage = metered.json("usage", "get", "storage_gb")
    assert [(d["id"], d["quantity"], d["metadata"], d["source"]) for d in storage] == [
        ("c2", "12.500000", {"tier": "gold"}, "csv"),
        ("c6", "2.000000", {}, None),
    ]
    assert storage[1]["timestamp"] == "2026-01-07T10:00:00+00:00"
    (call,) = metered.json("usage", "get", "api_calls")
    assert (Decimal(call["quantity"]), call["subjectId"]) == (1, "o2")
    assert "0 new, 3 already recorded, 4 bad" in metered("usage", "import", path).stdout


def test_csv_header_problems_stop_the_import(metered: Cli, tmp_path: Path) -> None:
    """An unknown or missing column is one error line and nothing is recorded."""
    unknown = write(
        tmp_path / "a.csv", "metricKey,subjectType,subjectId,quantiy\napi_calls,org,o1,1\n"
    )
    line = metered.fails("usage", "import", unknown)
    assert line.startswith("Error: line 1: unknown column 'quantiy' (columns: id, metricKey,")
    missing = write(tmp_path / "b.csv", "metricKey,subjectType\napi_calls,org\n")
    assert metered.fails("usage", "import", missing) == (
        "Error: line 1: missing column 'subjectId'"
    )
    assert metered.json("usage", "get", "api_calls") == []


def test_stdin_with_the_same_content_matches_the_file(metered: Cli, tmp_path: Path) -> None:
    """Lines read from stdin get the ids the same bytes got from a file: the key is the content."""
    path = write(tmp_path / "day.jsonl", jsonl(GOOD, {**GOOD, "subjectId": "o2"}))
    first = metered.json("usage", "import", path)
    doc = metered.json("usage", "import", "-", input=Path(path).read_text())
    assert (doc["recorded"], doc["duplicates"], doc["delivery"]) == (0, 2, first["delivery"])
    csv_doc = metered.json(
        "usage",
        "import",
        "-",
        "--input-format",
        "csv",
        input="metricKey,subjectType,subjectId\napi_calls,org,o9\n",
    )
    assert csv_doc["recorded"] == 1


def test_batch_id_equal_to_a_file_name_gives_the_former_ids(metered: Cli, tmp_path: Path) -> None:
    """--batch-id NAME (or its former spelling --name) derives ids as earlier versions did from
    a file called NAME, so imports made by them are recognised as retries."""
    from tsmeter.cli.importer import ID_NAMESPACE

    text = jsonl(GOOD)
    doc = metered.json("usage", "import", "-", "--batch-id", "march.jsonl", input=text)
    assert doc["delivery"] == "march.jsonl"
    (record,) = metered.json("usage", "get", "api_calls")
    former = uuid.uuid5(ID_NAMESPACE, f"march.jsonl\n1\n{text.rstrip()}")
    assert record["id"] == str(former)
    again = metered.json("usage", "import", "-", "--name", "march.jsonl", input=text)
    assert (again["recorded"], again["duplicates"]) == (0, 1)


def test_input_format_must_be_known(metered: Cli, tmp_path: Path) -> None:
    """A file whose format cannot be told from its name needs --input-format."""
    path = write(tmp_path / "usage.txt", jsonl(GOOD))
    assert "give --input-format" in metered.fails("usage", "import", path)
    assert metered.json("usage", "import", path, "--input-format", "jsonl")["recorded"] == 1


def test_missing_file_is_one_line(metered: Cli) -> None:
    """A file that does not exist is a one-line usage error."""
    result = metered("usage", "import", "nowhere.jsonl")
    assert "does not exist" in one_line_error(result)
    assert result.exit_code == 2


def test_utf8_bom_and_bad_bytes(metered: Cli, tmp_path: Path) -> None:
    """A byte order mark is ignored; a line that is not UTF-8 is a bad line."""
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + jsonl(GOOD).encode() + b'{"x": "\xff"}\n')
    result = metered("usage", "import", str(path))
    assert bad_lines(result.stderr) == ["line 2: not valid UTF-8 text"]
    assert len(metered.json("usage", "get", "api_calls")) == 1


def test_derived_ids_are_uuid5_of_delivery_line_and_text() -> None:
    """A line without an id gets uuid5(namespace, delivery, line number, text): stable,
    distinct."""
    from tsmeter.cli.importer import ID_NAMESPACE, line_id

    for name, line, text in (("sha256:00ff", 2, "x,y"), ("b", 10, '{"é": 1}'), ("-", 1, "")):
        expected = uuid.uuid5(ID_NAMESPACE, f"{name}\n{line}\n{text}")
        assert line_id(name, line, text) == str(expected)
    assert line_id("a.csv", 2, "x") != line_id("a.csv", 3, "x") != line_id("b.csv", 2, "x")


def test_stdin_is_named_in_messages(metered: Cli) -> None:
    """Messages about an import from stdin call it stdin."""
    result = metered("usage", "import", "-", input=jsonl(GOOD, "oops"))
    assert result.stdout.startswith("stdin: 2 lines = 2 records (1 new")
    assert "lines in stdin were bad" in result.stderr
