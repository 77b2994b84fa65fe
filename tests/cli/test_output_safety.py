"""What the CLI prints cannot be turned against its reader: terminal, JSON parser, spreadsheet."""

from __future__ import annotations

import csv
import io
import math
import sqlite3
import unicodedata
from datetime import UTC, datetime
from decimal import Decimal

import click
import pytest
from click.testing import CliRunner

from tests.cli.conftest import Cli, one_line_error
from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.main import TsmeterGroup, cli
from tsmeter.cli.output import Column, cell_text, emit_list, emit_one, visible
from tsmeter.domain import UsageRecord
from tsmeter.errors import ValidationError
from tsmeter.metering.reading import restore_cell

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
HIDING_IDS = (
    "\u202eevil-org",
    "org-1\u2066\u2069",
    "zero\u200bwidth",
    "paid\u200e",
    "line\u2028break",
    "para\u2029graph",
    "a\u061cb\u200f",
    "\u3164",
    "tag\U000e0041",
    "back\\slash",
    "literal\\u202e",
)
FORMULAS = ('=HYPERLINK("http://x.test","hi")', "+1", "-5", "@SUM(A1)", "'=x", "'abc", "ok")


def hidden_characters(text: str) -> list[str]:
    """The characters of ``text`` (newlines aside) a terminal would not show as themselves."""
    return [
        c
        for c in text
        if c != "\n" and (unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp", "Co", "Cn"})
    ]


def record(run: Cli, subject_id: str, quantity: str = "1") -> None:
    """Record ``quantity`` storage_gb for ``subject_id`` (an org) at a fixed time."""
    run.ok(
        "usage", "record", "--timestamp", "2026-03-01T12:00:00Z",
        "storage_gb", "org", "--", subject_id, quantity,
    )  # fmt: skip


def test_visible_escapes_every_bidi_zero_width_and_control_character() -> None:
    """Bidi controls, zero-width characters and C0/C1 controls all become visible escapes."""
    text = BIDI + ZERO_WIDTH + "".join(map(chr, range(0x20))) + "\x7f\x85\x9b"
    shown = visible(text)
    assert hidden_characters(shown) == []
    assert "\\u202e" in shown and "\\u200b" in shown and "\\x1b" in shown and "\\t" in shown
    assert shown.isascii()


def test_escapes_are_unambiguous_and_cells_are_cut_between_escapes() -> None:
    """A real U+202E and the six characters ``\\u202e`` show differently; cutting keeps escapes
    whole."""
    assert visible("x\u202e") != visible("x\\u202e")
    cut = cell_text("a" * 57 + "\u202e" + "b")
    assert cut == "a" * 57 + "…"
    assert len(cell_text("\u200b" * 100)) <= 60


@pytest.mark.parametrize("fmt", ["table", None])
def test_tables_show_hostile_subject_ids_escaped(metered: Cli, fmt: str | None) -> None:
    """usage get, usage summary and alert list tables show hidden characters as escapes."""
    for subject_id in HIDING_IDS:
        record(metered, subject_id)
    metered.ok("aggregate", "--period", "daily")
    metered.ok("threshold", "create", "storage_gb", "org", "0.5", "--period", "monthly")
    metered.ok("alert", "evaluate", "--at", "2026-03-02T00:00:00Z")
    for args in (
        ["usage", "get", "storage_gb", "--from", "2026-03-01", "--to", "2026-03-02"],
        ["usage", "summary", "storage_gb", "--period", "daily", "--from", "2026-03-01",
         "--to", "2026-03-02"],
        ["alert", "list"],
    ):  # fmt: skip
        out = metered.ok(*args, fmt=fmt).stdout
        assert hidden_characters(out) == [], args
        for subject_id in HIDING_IDS:
            assert visible(subject_id) in out, (args, subject_id)


def test_one_object_field_lines_escape_keys_and_values(metered: Cli) -> None:
    """``field  value`` lines (one result in table format) escape the value too."""
    out = metered.ok("metric", "define", "k\u202eey", "--unit", "u\u200bnit").stdout
    assert hidden_characters(out) == []
    assert "k\\u202eey" in out and "u\\u200bnit" in out


def test_json_output_stays_exact(metered: Cli) -> None:
    """JSON output gives the original ids back, hidden characters included."""
    for subject_id in HIDING_IDS:
        record(metered, subject_id)
    rows = metered.json("usage", "get", "storage_gb", "--from", "2026-03-01", "--to", "2026-03-02")
    assert sorted(r["subjectId"] for r in rows) == sorted(HIDING_IDS)


def test_csv_output_neutralises_formulas_in_text_cells_only(metered: Cli) -> None:
    """Text cells that would run as formulas get a ' (reversibly); numbers never do."""
    for subject_id in FORMULAS:
        record(metered, subject_id, "-5")
    window = ["--from", "2026-03-01", "--to", "2026-03-02"]
    text = metered.ok("usage", "get", "storage_gb", *window, fmt="csv").stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    cells = {r["subjectId"] for r in rows}
    assert cells == {"'=HYPERLINK(\"http://x.test\",\"hi\")", "'+1", "'-5", "'@SUM(A1)", "''=x",
                     "'abc", "ok"}  # fmt: skip
    assert {restore_cell(c) for c in cells} == set(FORMULAS)
    assert {r["quantity"] for r in rows} == {"-5.000000"}
    raw = metered.ok("--no-csv-neutralise", "usage", "get", "storage_gb", *window, fmt="csv")
    assert {r["subjectId"] for r in csv.DictReader(io.StringIO(raw.stdout))} == set(FORMULAS)


def test_json_output_refuses_infinity_with_one_error_line(metered: Cli) -> None:
    """The store holds integer units only (a non-finite value is refused by its CHECK); a
    non-finite Decimal some other store handed out is a one-line error in JSON, never
    ``"Infinity"``, and still shows in a table."""
    record(metered, "org-1", "2")
    with sqlite3.connect(metered.path) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE usage_records SET units = ?", (math.inf,))
    conn.close()
    result = CliRunner().invoke(probe, ["records"])
    line = one_line_error(result)
    assert "[1].quantity" in line and "JSON cannot represent" in line
    assert "Infinity" not in result.stdout and "NaN" not in result.stdout
    table = CliRunner().invoke(probe, ["--format", "table", "records"])
    assert table.exit_code == 0 and "Infinity" in table.stdout


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_metadata_nested_too_deep_is_one_error_line(metered: Cli, fmt: str) -> None:
    """Metadata nested 256 deep (stored before intake bounded it) is a one-line error naming the
    record in JSON and CSV, and still shows in a table."""
    record(metered, "org-1", "2")
    with sqlite3.connect(metered.path) as conn:
        conn.execute("UPDATE usage_records SET metadata = ?", ('{"a":' * 256 + "1" + "}" * 256,))
        (record_id,) = conn.execute("SELECT id FROM usage_records").fetchone()
    conn.close()
    window = ["--from", "2026-03-01", "--to", "2026-03-02"]
    result = metered("usage", "get", "storage_gb", *window, fmt=fmt)
    assert result.exit_code == 1
    assert record_id in one_line_error(result)
    assert "org-1" in metered.ok("usage", "get", "storage_gb", *window).stdout


@click.group(cls=TsmeterGroup)
@click.option("--format", "fmt", default="json")
@click.pass_context
def probe(ctx: click.Context, fmt: str) -> None:
    """A root command like tsmeter's, for rows no store would hand out.

    Example: ``probe many``.
    """
    ctx.obj = CliState(fmt=fmt)  # type: ignore[arg-type]


@probe.command()
@pass_state
def many(state: CliState) -> None:
    """A list whose second row holds infinity and NaN. Example: ``probe many``."""
    rows = [{"total": 1.0}, {"total": math.inf, "deep": [{"x": math.nan}]}]
    emit_list(state, rows, [Column("TOTAL", "total")])


@probe.command()
@pass_state
def one(state: CliState) -> None:
    """One object holding minus infinity. Example: ``probe one``."""
    emit_one(state, {"subject": "o", "total": -math.inf})


@probe.command()
@pass_state
def records(state: CliState) -> None:
    """Two records, the second with an infinite quantity. Example: ``probe records``."""
    rows = [
        UsageRecord.model_construct(
            id=f"r{i}", metric_key="m", subject_type="org", subject_id="o", org_id=None,
            quantity=quantity, timestamp=datetime(2026, 3, 1, tzinfo=UTC), metadata={},
            source=None,
        )
        for i, quantity in enumerate([Decimal("2.000000"), Decimal("Infinity")])
    ]  # fmt: skip
    emit_list(state, rows, [Column("QUANTITY", "quantity")])


@probe.command()
def hostile() -> None:
    """A tsmeter error quoting raw input over two lines. Example: ``probe hostile``."""
    raise ValidationError("subjectId", "unknown org \u202eevil\u200b\nsecond line")


@pytest.mark.parametrize(("command", "where"), [("many", "[1].total"), ("one", "total")])
def test_non_finite_numbers_are_named_not_printed(command: str, where: str) -> None:
    """emit_list and emit_one name the non-finite value's place; stdout stays empty."""
    result = CliRunner().invoke(probe, [command])
    line = one_line_error(result)
    assert where in line and "JSON cannot represent" in line
    assert result.exit_code == 1 and result.stdout == ""


def test_table_and_csv_still_show_non_finite_numbers() -> None:
    """Table and CSV output show inf as text, so the value can still be inspected."""
    table = CliRunner().invoke(probe, ["--format", "table", "many"])
    assert table.exit_code == 0 and "inf" in table.stdout
    data = CliRunner().invoke(probe, ["--format", "csv", "one"])
    assert data.exit_code == 0 and "-inf" in data.stdout


def test_error_lines_escape_hidden_characters_and_newlines() -> None:
    """An error quoting raw input stays one visible line."""
    result = CliRunner().invoke(probe, ["hostile"])
    line = one_line_error(result)
    assert line == "Error: subjectId: unknown org \\u202eevil\\u200b\\nsecond line"


def test_the_root_command_offers_the_csv_switch() -> None:
    """``--csv-neutralise/--no-csv-neutralise`` is a documented root option."""
    text = CliRunner().invoke(cli, ["--help"]).stdout
    assert "--csv-neutralise / --no-csv-neutralise" in text
