"""``tsmeter usage cancel``, ``usage amend`` and ``usage corrections``: corrections change
the usage every later command reads (totals compared with a Decimal brute force over the
records as corrected), a repeated command changes nothing and says so, the trail lists what
was done, errors are one line."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.cli.conftest import Cli

DAY = (datetime.now(UTC) - timedelta(days=2)).date()
AT = [f"{DAY}T{h:02d}:00:00Z" for h in (1, 2, 3)]


def _total(run: Cli) -> tuple[Decimal, int]:
    (doc,) = run.json("usage", "summary", "gb", "--period", "daily", "--from", str(DAY),
                      "--to", str(DAY + timedelta(days=1)))  # fmt: skip
    return Decimal(doc["totalQuantity"]), doc["recordCount"]


def test_cancel_amend_and_the_trail(run: Cli) -> None:
    run.ok("metric", "define", "gb", "--precision", "2")
    quantities = {"r-1": Decimal("1.25"), 'r/2 "x"': Decimal("2.50"), "r-3": Decimal("3")}
    for (rid, q), at in zip(quantities.items(), AT, strict=True):
        run.ok("usage", "record", "gb", "org", "o-1", str(q), "--id", rid, "--timestamp", at)
    assert _total(run) == (sum(quantities.values()), 3)

    said = run.ok("usage", "cancel", 'r/2 "x"', "--reason", "sent twice").stdout
    assert said.startswith('Cancelled record r/2 "x" (quantity 2.50 no longer counts)'), said
    del quantities['r/2 "x"']
    assert _total(run) == (sum(quantities.values()), 2)
    again = run.ok("usage", "cancel", 'r/2 "x"', "--reason", "sent twice").stdout
    assert again.startswith("Nothing changed: correction "), again

    doc = run.json("usage", "amend", "r-3", "0.75", "--reason", "misread", "--actor", "ops")
    assert (doc["kind"], doc["applied"], doc["actor"]) == ("AMEND", True, "ops")
    assert (Decimal(doc["quantityBefore"]), Decimal(doc["quantityAfter"])) == (3, Decimal("0.75"))
    quantities["r-3"] = Decimal("0.75")
    assert _total(run) == (sum(quantities.values()), 2)
    negative = run.json("usage", "amend", "r-1", "--reason", "refund", "--", "-1")
    assert Decimal(negative["quantityAfter"]) == -1
    quantities["r-1"] = Decimal(-1)
    assert _total(run) == (sum(quantities.values()), 2)

    trail = run.json("usage", "corrections", "gb")
    assert [(c["recordId"], c["kind"]) for c in trail] == [
        ('r/2 "x"', "CANCEL"),
        ("r-3", "AMEND"),
        ("r-1", "AMEND"),
    ]
    assert trail[0]["actor"]  # the login name by default
    assert [c["recordId"] for c in run.json("usage", "corrections", "--record-id", "r-3")] == [
        "r-3"
    ]
    rows = list(csv.DictReader(io.StringIO(run.ok("usage", "corrections", fmt="csv").stdout)))
    assert [r["reason"] for r in rows] == ["sent twice", "misread", "refund"]
    table = run.ok("usage", "corrections").stdout
    assert table.splitlines()[0].split()[:3] == ["CORRECTED", "AT", "KIND"]
    assert "No corrections." in run("usage", "corrections", "--record-id", "nope").stderr


def test_errors_are_one_line(run: Cli) -> None:
    run.ok("metric", "define", "gb", "--precision", "2")
    run.ok("usage", "record", "gb", "org", "o-1", "1", "--id", "r-1", "--timestamp", AT[0])
    run.ok("usage", "record", "gb", "org", "o-1", "1", "--id", "old",
           "--timestamp", "2020-01-01T00:00:00Z")  # fmt: skip
    assert "not found" in run.fails("usage", "cancel", "nope", "--reason", "x")
    assert "recordId" in run.fails("usage", "cancel", "old", "--reason", "x")
    assert "quantity" in run.fails("usage", "amend", "r-1", "1.001", "--reason", "x")
    assert "reason" in run.fails("usage", "cancel", "r-1", "--reason", " ")
    assert "--reason" in run("usage", "cancel", "r-1").stderr
    run.ok("usage", "cancel", "r-1", "--reason", "x")
    assert "cancel" in run.fails("usage", "amend", "r-1", "2", "--reason", "x")
