"""Corrections over HTTP against a real ``tsmeter serve`` on the embedded store and influxd:
cancel and amend change every read at once (totals compared with a Decimal brute force over
the records as corrected), a retry is a no-op, the audit trail lists them, hostile record ids
are data, and refusals are problem+json naming the field; with keys required, correcting
needs the admin scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import tsmeter
from tests.api.server import Served
from tests.api.test_server import problem

DAY = (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
HOSTILE_ID = 'r/1 ,"=\\ é'


def _at(hours: float) -> str:
    return (DAY + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def _path(record_id: str, action: str) -> str:
    return f"/v1/usage/records/{quote(record_id, safe='')}/{action}"


def _total(served: Served, subject: str) -> tuple[Decimal, int]:
    answer = served.get("/v1/usage/summary", params={
        "metricKey": "gb", "subjectType": "org", "subjectId": subject, "periodType": "DAILY",
        "at": _at(12)})  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return Decimal(body["totalQuantity"]), body["recordCount"]


def _records() -> list[dict[str, Any]]:
    ids = [HOSTILE_ID, "r-2", "r-3", "r-4"]
    return [
        {"id": rid, "metricKey": "gb", "subjectType": "org", "subjectId": "o-1",
         "quantity": f"{i + 1}.25", "timestamp": _at(i + 1)}
        for i, rid in enumerate(ids)
    ]  # fmt: skip


def test_cancel_amend_retry_and_audit(served: Served) -> None:
    """Cancel one record and amend another: the day's total is the brute force over the
    corrected records, on the next read; the same calls again change nothing and answer
    ``applied: false``; the trail lists both, oldest first, filtered by record."""
    assert served.post("/v1/metrics", json={"key": "gb", "precision": 2}).status_code == 201
    records = _records()
    assert served.post("/v1/usage/records/batch", json={"records": records}).status_code == 200
    quantities = {r["id"]: Decimal(r["quantity"]) for r in records}
    assert _total(served, "o-1") == (sum(quantities.values()), 4)

    cancel = {"reason": "sent twice, ticket #4411", "actor": "ops@example.com"}
    answer = served.post(_path(HOSTILE_ID, "cancel"), json=cancel)
    assert answer.status_code == 200, answer.text
    cancelled = answer.json()
    assert (cancelled["recordId"], cancelled["kind"], cancelled["applied"]) == (
        HOSTILE_ID,
        "CANCEL",
        True,
    )
    assert Decimal(cancelled["quantityBefore"]) == Decimal("1.25")
    assert Decimal(cancelled["quantityAfter"]) == 0
    assert cancelled["actor"] == "ops@example.com" and cancelled["reason"] == cancel["reason"]
    assert (cancelled["metricKey"], cancelled["subjectId"]) == ("gb", "o-1")
    del quantities[HOSTILE_ID]
    assert _total(served, "o-1") == (sum(quantities.values()), 3)

    amend = {"quantity": 0.1, "reason": "meter read twice", "actor": "ops"}
    answer = served.post(_path("r-3", "amend"), json=amend)
    assert answer.status_code == 200, answer.text
    amended = answer.json()
    assert (amended["kind"], amended["applied"]) == ("AMEND", True)
    assert Decimal(amended["quantityBefore"]) == Decimal("3.25")
    assert Decimal(amended["quantityAfter"]) == Decimal("0.1")
    quantities["r-3"] = Decimal("0.1")
    assert _total(served, "o-1") == (sum(quantities.values()), 3)

    # the same calls again: no-ops, the same corrections
    again = served.post(_path(HOSTILE_ID, "cancel"), json=cancel).json()
    assert again["applied"] is False and again["id"] == cancelled["id"]
    again = served.post(_path("r-3", "amend"), json={**amend, "quantity": "0.10"}).json()
    assert again["applied"] is False and again["id"] == amended["id"]
    # recording the cancelled id again counts nothing
    served.post("/v1/usage/records", json=records[0])
    assert _total(served, "o-1") == (sum(quantities.values()), 3)

    trail = served.get("/v1/usage/corrections", params={"metricKey": "gb"}).json()
    assert [(c["recordId"], c["kind"]) for c in trail["corrections"]] == [
        (HOSTILE_ID, "CANCEL"),
        ("r-3", "AMEND"),
    ]
    one = served.get("/v1/usage/corrections", params={"recordId": "r-3"}).json()
    assert [c["id"] for c in one["corrections"]] == [amended["id"]]
    later = served.get("/v1/usage/corrections", params={"from": _at(2.5)}).json()
    assert [c["recordId"] for c in later["corrections"]] == ["r-3"]
    # an explicit correction id: a second amend of the same record
    answer = served.post(_path("r-3", "amend"),
                         json={**amend, "quantity": "2", "correctionId": "fix-2"})  # fmt: skip
    assert answer.json()["id"] == "fix-2" and answer.json()["applied"] is True
    quantities["r-3"] = Decimal(2)
    assert _total(served, "o-1") == (sum(quantities.values()), 3)


def test_refusals_name_the_field(served: Served) -> None:
    """Missing or bad fields, an unknown record, a record outside the window, amending a
    cancelled record: problem+json, nothing changed."""
    assert served.post("/v1/metrics", json={"key": "gb", "precision": 2}).status_code == 201
    records = _records()
    old = {**records[1], "id": "old", "timestamp": "2020-01-01T00:00:00Z"}
    assert served.post("/v1/usage/records/batch",
                       json={"records": [*records, old]}).status_code == 200  # fmt: skip
    before = _total(served, "o-1")
    ok = {"reason": "why", "actor": "me"}
    for path, body, field in (
        (_path("r-2", "cancel"), {"actor": "me"}, "reason"),
        (_path("r-2", "cancel"), {"reason": "why"}, "actor"),
        (_path("r-2", "cancel"), {**ok, "reason": ""}, "reason"),
        (_path("r-2", "cancel"), {**ok, "actor": "a\nb"}, "actor"),
        (_path("r-2", "cancel"), {**ok, "colour": "red"}, "colour"),
        (_path("r-2", "cancel"), {**ok, "reason": 3}, "reason"),
        (_path("r-2", "amend"), ok, "quantity"),
        (_path("r-2", "amend"), {**ok, "quantity": "lots"}, "quantity"),
        (_path("r-2", "amend"), {**ok, "quantity": "1.001"}, "quantity"),
        (_path("old", "cancel"), ok, "recordId"),
    ):
        got = problem(served.post(path, json=body), 422)
        assert got["errors"][0]["field"] == field, (path, body, got)
    assert problem(served.post(_path("nope", "cancel"), json=ok), 404)["type"] == (
        "/problems/not-found"
    )
    assert problem(served.post(_path("r-2", "cancel"), data=b"{"), 400)
    assert _total(served, "o-1") == before
    assert served.post(_path("r-2", "cancel"), json=ok).status_code == 200
    assert problem(served.post(_path("r-2", "amend"), json={**ok, "quantity": 1}), 409)
    assert served.get("/v1/usage/corrections").json()["corrections"][0]["recordId"] == "r-2"
    got = problem(served.get("/v1/usage/corrections", params={"from": "soon"}), 422)
    assert got["errors"][0]["field"] == "from"


def test_scopes(tmp_path: Path) -> None:
    """Correcting needs admin; reading the trail needs read."""
    store = f"sqlite:///{tmp_path / 'usage.db'}"
    with tsmeter.connect(store) as meter:
        meter.define_metric("gb", precision=2)
        keys = {scope: meter.api_keys.create(scope, [scope]).key
                for scope in ("admin", "ingest", "read")}  # fmt: skip
    auth = {scope: {"authorization": f"Bearer {key}"} for scope, key in keys.items()}
    ok = {"reason": "why", "actor": "me"}
    with Served(store, tmp_path, args=()) as server:
        assert server.post("/v1/usage/records", json=_records()[1], headers=auth["ingest"]).ok
        for scope in ("ingest", "read"):
            got = problem(server.post(_path("r-2", "cancel"), json=ok, headers=auth[scope]), 403)
            assert got["type"] == "/problems/forbidden"
        assert problem(server.post(_path("r-2", "cancel"), json=ok), 401)
        assert problem(server.get("/v1/usage/corrections", headers=auth["ingest"]), 403)
        done = server.post(_path("r-2", "cancel"), json=ok, headers=auth["admin"])
        assert done.status_code == 200, done.text
        trail = server.get("/v1/usage/corrections", headers=auth["read"]).json()
        assert [c["recordId"] for c in trail["corrections"]] == ["r-2"]
