"""``tsmeter usage breakdown``: usage grouped by dimensions and filtered by their values, in
every output format, with totals compared with a Decimal brute force over the records."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from decimal import Decimal
from typing import Any

from tests.cli.conftest import Cli

RANGE = ("--from", "2026-11", "--to", "2026-12")
MODELS = ["gpt-4o", 'a,b "c"=d', "\u202eevil", None]


def _define_and_import(run: Cli) -> list[dict[str, Any]]:
    from tsmeter import connect

    with connect(run.store, mirror=False) as meter:
        meter.define_metric("tokens", precision=2,
                            dimensions=[{"name": "model"}, {"name": "region"}])  # fmt: skip
    records = []
    for i in range(20):
        metadata: dict[str, Any] = {"region": ["eu", "us"][i % 2]}
        if MODELS[i % 4] is not None:
            metadata["model"] = MODELS[i % 4]
        records.append({"id": f"t-{i}", "metricKey": "tokens", "subjectType": "org",
                        "subjectId": f"o-{i % 2}", "quantity": f"{i}.5",
                        "timestamp": f"2026-11-{1 + i:02d}T10:00:00Z",
                        "metadata": metadata})  # fmt: skip
    text = "".join(json.dumps(r) + "\n" for r in records)
    run.ok("usage", "import", "-", "--input-format", "jsonl", input=text)
    return records


def _expected(records: list[dict[str, Any]], names: tuple[str, ...], keep: Any = None) -> Any:
    sums: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    for r in records:
        if keep is None or keep(r["metadata"]):
            sums[(r["subjectId"], *(r["metadata"].get(n) for n in names))] += Decimal(r["quantity"])
    return dict(sums)


def test_json_csv_and_table(run: Cli) -> None:
    """JSON: one summary per subject and group, ``dimensions`` holding the group's values
    (null for none); CSV: the same rows; a table: a column per dimension, "(none)" for no
    value, hostile values escaped."""
    records = _define_and_import(run)
    docs = run.json("usage", "breakdown", "tokens", *RANGE, "--group-by", "model")
    got = {(d["subjectId"], d["dimensions"]["model"]): Decimal(d["totalQuantity"]) for d in docs}
    assert got == _expected(records, ("model",))
    docs = run.json("usage", "breakdown", "tokens", *RANGE, "-g", "region,model",
                    "--where", "region=eu")  # fmt: skip
    got = {(d["subjectId"], d["dimensions"]["region"], d["dimensions"]["model"]):
           Decimal(d["totalQuantity"]) for d in docs}  # fmt: skip
    assert got == _expected(records, ("region", "model"), lambda m: m["region"] == "eu")
    docs = run.json("usage", "breakdown", "tokens", *RANGE, "-w", "model=", "--period", "daily")
    assert {d["periodStart"][:10] for d in docs} == {
        r["timestamp"][:10] for r in records if "model" not in r["metadata"]
    }
    rows = list(csv.DictReader(io.StringIO(run.ok(
        "usage", "breakdown", "tokens", *RANGE, "-g", "model", fmt="csv").stdout)))  # fmt: skip
    by_model = _expected(records, ("model",))
    assert {(r["subjectId"], json.loads(r["dimensions"])["model"]) for r in rows} == set(by_model)
    table = run.ok("usage", "breakdown", "tokens", *RANGE, "-g", "model").stdout
    header = table.splitlines()[0].split()
    assert header[:4] == ["PERIOD", "START", "SUBJECT", "TYPE"] and "MODEL" in header
    assert "(none)" in table and "\\u202eevil" in table and "\u202e" not in table
    assert 'a,b "c"=d' in table


def test_errors_are_one_line(run: Cli) -> None:
    """A filter without =, a name given twice, an unknown dimension: one Error: line."""
    _define_and_import(run)
    assert "--where" in run.fails("usage", "breakdown", "tokens", *RANGE, "-w", "model")
    assert "twice" in run.fails("usage", "breakdown", "tokens", *RANGE, "-w", "model=a",
                                "-w", "model=b")  # fmt: skip
    assert "colour" in run.fails("usage", "breakdown", "tokens", *RANGE, "-g", "colour")
    assert "later" in run.fails("usage", "breakdown", "tokens", *RANGE, "--as-of", "later")
