"""Exact decimal quantities through the CLI: import, summary and the metric's precision.

Expected totals are computed here with Python's :mod:`decimal` over the same inputs, never
with tsmeter's code; floats are shown to get them wrong, so the test would notice one.
"""

from __future__ import annotations

import csv
import decimal
import io
import json
import random
from decimal import Decimal
from pathlib import Path

import pytest

from tests.cli.conftest import Cli

T = "2026-01-05T10:00:00Z"
JANUARY = ("--period", "monthly", "--from", "2026-01-01", "--to", "2026-02-01")
MODES = {
    "half_even": decimal.ROUND_HALF_EVEN,
    "half_up": decimal.ROUND_HALF_UP,
    "up": decimal.ROUND_UP,
    "down": decimal.ROUND_DOWN,
    "ceiling": decimal.ROUND_CEILING,
    "floor": decimal.ROUND_FLOOR,
}


def places(value: Decimal, n: int) -> str:
    """``value`` (exact, at most ``n`` places) written with exactly ``n`` places."""
    text = f"{value:.{n}f}"
    assert Decimal(text) == value, (value, n)  # nothing rounded: the expectation is exact
    return text


def totals(run: Cli, key: str) -> dict[str, str]:
    """``usage summary`` in JSON: each subject's monthly totalQuantity, as printed."""
    docs = run.json("usage", "summary", key, *JANUARY)
    return {d["subjectId"]: d["totalQuantity"] for d in docs}


@pytest.fixture
def money(run: Cli) -> Cli:
    """A store with three SUM metrics: tenths (precision 6), cents (2), micro (6)."""
    run.ok("metric", "define", "tenths", "-a", "sum")
    run.ok("metric", "define", "cents", "-a", "sum", "--precision", "2", "--unit", "USD")
    run.ok("metric", "define", "micro", "-a", "sum", "--precision", "6")
    return run


def test_a_thousand_tenths_from_json_and_csv_sum_to_exactly_one_hundred(
    money: Cli, tmp_path: Path
) -> None:
    """0.1 × 1,000 as JSON numbers, JSON strings and CSV cells: 100 exactly (floats: not)."""
    floats = 0.0
    for _ in range(1000):
        floats += 0.1
    assert floats != 100  # the float sum drifts; an exact import must not
    lines = [
        {"metricKey": "tenths", "subjectType": "org", "subjectId": "json", "timestamp": T,
         "quantity": "0.1" if i % 2 else "QTY"}
        for i in range(1000)
    ]  # fmt: skip
    text = "".join(json.dumps(item).replace('"QTY"', "0.1") + "\n" for item in lines)
    (tmp_path / "tenths.jsonl").write_text(text, encoding="utf-8")
    rows = "".join(f"tenths,org,csv,0.1,{T}\n" for _ in range(1000))
    (tmp_path / "tenths.csv").write_text(
        "metricKey,subjectType,subjectId,quantity,timestamp\n" + rows, encoding="utf-8"
    )
    for name in ("tenths.jsonl", "tenths.csv"):
        doc = money.json("usage", "import", str(tmp_path / name))
        assert (doc["recorded"], doc["bad"]) == (1000, 0)
    expected = places(sum([Decimal("0.1")] * 1000, Decimal(0)), 6)
    assert expected == "100.000000"
    assert totals(money, "tenths") == {"json": expected, "csv": expected}
    table = money.ok("usage", "summary", "tenths", *JANUARY).stdout
    assert table.count(" 100.000000 ") == 2
    csv_rows = list(csv.DictReader(io.StringIO(
        money.ok("usage", "summary", "tenths", *JANUARY, fmt="csv").stdout
    )))  # fmt: skip
    assert {r["totalQuantity"] for r in csv_rows} == {expected}
    assert {r["sum"] for r in csv_rows} == {expected}


def test_cents_and_six_decimals_sum_exactly(money: Cli, tmp_path: Path) -> None:
    """Random cents and micro-units, imported from JSON and CSV, total what decimal says."""
    rng = random.Random(7)
    cents = [Decimal(rng.randrange(-5_000, 1_000_000)).scaleb(-2) for _ in range(600)]
    micro = [Decimal(rng.randrange(1, 10**9)).scaleb(-6) for _ in range(600)]
    jsonl = io.StringIO()
    csv_text = io.StringIO()
    writer = csv.writer(csv_text, lineterminator="\n")
    writer.writerow(["metricKey", "subjectType", "subjectId", "quantity", "timestamp"])
    for i, (c, m) in enumerate(zip(cents, micro, strict=True)):
        subject = f"o{i % 3}"
        for key, value in (("cents", c), ("micro", m)):
            if i % 2:  # JSON: a number as written, or the decimal as a string
                number = str(value) if i % 4 == 1 else json.dumps(str(value))
                item = {"metricKey": key, "subjectType": "org", "subjectId": subject,
                        "timestamp": T, "quantity": "QTY"}  # fmt: skip
                jsonl.write(json.dumps(item).replace('"QTY"', number) + "\n")
            else:
                writer.writerow([key, "org", subject, str(value), T])
    (tmp_path / "mixed.jsonl").write_text(jsonl.getvalue(), encoding="utf-8")
    (tmp_path / "mixed.csv").write_text(csv_text.getvalue(), encoding="utf-8")
    assert money.json("usage", "import", str(tmp_path / "mixed.jsonl"))["bad"] == 0
    assert money.json("usage", "import", str(tmp_path / "mixed.csv"))["bad"] == 0
    for key, values, n in (("cents", cents, 2), ("micro", micro, 6)):
        expected = {f"o{s}": places(sum(values[s::3], Decimal(0)), n) for s in range(3)}
        assert totals(money, key) == expected, key
        docs = money.json("usage", "summary", key, *JANUARY)
        for doc in docs:
            mine = values[int(doc["subjectId"][1:]) :: 3]
            assert (doc["min"], doc["max"]) == (places(min(mine), n), places(max(mine), n))


def test_avg_is_rounded_half_even_to_the_metric_precision(run: Cli) -> None:
    """An AVG total is the exact sum over the count, rounded half to even to the places."""
    run.ok("metric", "define", "latency", "-a", "avg", "--precision", "1")
    values = ["0.1", "0.2", "0.2", "0.4"]  # mean 0.225 -> 0.2
    for i, value in enumerate(values):
        run.ok("usage", "record", "latency", "org", "o1", value, "--timestamp", T, "--id", str(i))
    mean = sum(map(Decimal, values), Decimal(0)) / len(values)
    expected = str(mean.quantize(Decimal("0.1"), decimal.ROUND_HALF_EVEN))
    assert totals(run, "latency") == {"o1": expected}


def test_precision_and_rounding_are_shown(run: Cli) -> None:
    """define takes --precision and --rounding; get and list show them in every format."""
    doc = run.json("metric", "define", "spend", "--precision", "2", "--rounding", "HALF_UP")
    assert (doc["precision"], doc["rounding"]) == (2, "HALF_UP")
    plain = run.json("metric", "define", "bytes", "--precision", "0")
    assert (plain["precision"], plain["rounding"]) == (0, None)
    default = run.json("metric", "define", "calls")
    assert (default["precision"], default["rounding"]) == (6, None)
    lines = run.ok("metric", "get", "bytes").stdout.splitlines()
    assert "precision        0" in lines and "rounding         refuse" in lines
    table = run.ok("metric", "list").stdout.splitlines()
    by_key = {line.split()[0]: line.split()[3:5] for line in table[2:]}  # no unit given
    assert by_key == {"spend": ["2", "HALF_UP"], "bytes": ["0", "refuse"],
                      "calls": ["6", "refuse"]}  # fmt: skip
    rows = {
        r["key"]: r for r in csv.DictReader(io.StringIO(run.ok("metric", "list", fmt="csv").stdout))
    }
    assert (rows["spend"]["precision"], rows["spend"]["rounding"]) == ("2", "HALF_UP")
    assert (rows["bytes"]["precision"], rows["bytes"]["rounding"]) == ("0", "")


def test_an_extra_digit_is_refused_with_a_clear_message(run: Cli, tmp_path: Path) -> None:
    """Without --rounding a value with more places than the metric keeps is an error (exit 1)
    naming quantity, from the command line and from an import; nothing is recorded."""
    run.ok("metric", "define", "spend", "--precision", "2")
    result = run("usage", "record", "spend", "org", "o1", "0.125")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: quantity: has 3 decimal places, the metric keeps 2 (got 0.125); round it, or "
        "declare the metric's rounding\n"
    )
    path = tmp_path / "extra.csv"
    path.write_text(
        f"metricKey,subjectType,subjectId,quantity,timestamp\nspend,org,o1,0.125,{T}\n"
        f"spend,org,o1,0.12,{T}\n",
        encoding="utf-8",
    )
    imported = run("usage", "import", str(path))
    assert imported.exit_code == 1
    assert imported.stderr.splitlines()[0] == (
        "line 2: quantity: has 3 decimal places, the metric keeps 2 (got 0.125); round it, or "
        "declare the metric's rounding"
    )
    assert [r["quantity"] for r in run.json("usage", "get", "spend")] == ["0.12"]
    assert "13 is not in the range" in run.fails("metric", "define", "x", "--precision", "13")
    bad = run("metric", "define", "y", "--rounding", "nearest")
    assert bad.exit_code == 2 and "'nearest' is not one of" in bad.stderr


@pytest.mark.parametrize("mode", sorted(MODES))
def test_rounding_modes_match_decimal(run: Cli, mode: str) -> None:
    """With --rounding each value is rounded to the places as decimal's mode rounds it."""
    run.ok("metric", "define", "spend", "--precision", "2", "--rounding", mode)
    values = ["0.125", "0.135", "-0.125", "-0.135", "2.5001", "-2.5049", "0.005", "7"]
    got = [
        run.json("usage", "record", "spend", "org", "o1", "--id", str(i), "--timestamp", T,
                 "--", value)["quantity"]
        for i, value in enumerate(values)
    ]  # fmt: skip
    expected = [str(Decimal(v).quantize(Decimal("0.01"), MODES[mode])) for v in values]
    assert got == expected
    total = sum(map(Decimal, expected), Decimal(0))
    assert totals(run, "spend") == {"o1": places(total, 2)}


def test_rounding_can_be_changed_and_precision_is_fixed_once_recorded(run: Cli) -> None:
    """update --rounding applies from then on (refuse turns it off again); a new precision
    for a metric with records is refused with the Meter's message (exit 1)."""
    run.ok("metric", "define", "spend", "--precision", "2")
    assert run("usage", "record", "spend", "org", "o1", "1.005").exit_code == 1
    doc = run.json("metric", "update", "spend", "--rounding", "half_even")
    assert doc["rounding"] == "HALF_EVEN"
    assert run.json("usage", "record", "spend", "org", "o1", "1.005")["quantity"] == "1.00"
    assert run.json("metric", "update", "spend", "--rounding", "refuse")["rounding"] is None
    assert run("usage", "record", "spend", "org", "o1", "1.005").exit_code == 1
    result = run("metric", "update", "spend", "--precision", "3")
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert line.startswith("Error: precision: ") and "\n" not in line
    assert run.json("metric", "get", "spend")["precision"] == 2


def test_thresholds_are_exact(run: Cli) -> None:
    """A limit and a percentage warn level are exact decimals, printed without float noise."""
    run.ok("metric", "define", "spend", "--precision", "2")
    doc = run.json("threshold", "create", "spend", "org", "0.30", "--warn-at", "10%")
    assert Decimal(doc["threshold"]) == Decimal("0.30")
    assert Decimal(doc["warnThreshold"]) == Decimal("0.03")  # 0.1 * 0.3 in floats: 0.03000...04
    assert isinstance(doc["threshold"], str) and "e" not in doc["threshold"].lower()
    run.ok("usage", "record", "spend", "org", "o1", "0.10", "--timestamp", T)
    run.ok("usage", "record", "spend", "org", "o1", "0.20", "--timestamp", T)
    check = run.json("threshold", "check", "spend", "org", "o1", "--quantity", "0.01")
    assert check["quantity"] == "0.01"
