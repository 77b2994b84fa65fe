"""The HTTP API against a real ``tsmeter serve`` process, on the embedded store and influxd:
every route, problem+json naming the field, hostile names and exact decimals round trip,
batches all or nothing, retried batches counted once, streamed exports re-importable."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests

from tests.api.server import ROOT, Served

T0 = "2026-03-10T12:00:00Z"

HOSTILE = [
    "a,b",
    'quote"d',
    "eq=ual",
    "back\\slash",
    "trailing\\",
    "space d",
    "ünïcødé €",
    "\U0001f600 emoji",
    "\u202eright-to-left",
    "'single'",
    "#hash",
    "x" * 256,
]


def problem(answer: requests.Response, status: int) -> dict[str, Any]:
    """The problem+json body of ``answer``, checked to have ``status``."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert set(body) == {"type", "title", "status", "detail", "errors"}
    assert body["status"] == status
    return body


def define(server: Served, key: str = "gb", **fields: Any) -> dict[str, Any]:
    answer = server.post("/v1/metrics", json={"key": key, **fields})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def total(server: Served, subject: str, key: str = "gb") -> Decimal:
    answer = server.get("/v1/usage/summary", params={
        "metricKey": key, "subjectType": "org", "subjectId": subject, "periodType": "MONTHLY",
        "at": T0})  # fmt: skip
    assert answer.status_code == 200, answer.text
    return Decimal(answer.json()["totalQuantity"])


def test_metric_routes(served: Served) -> None:
    """Define, read, list, change and delete a metric; conflicts, bad fields and unknown
    metrics are problem+json naming what is wrong."""
    created = define(served, 'a/b,c="d" é', aggregationType="max", unit="GB", precision=3)
    assert created["aggregationType"] == "MAX" and created["precision"] == 3
    key = created["key"]
    path = "/v1/metrics/" + requests.utils.quote(key, safe="")
    assert served.get(path).json() == created
    assert [m["key"] for m in served.get("/v1/metrics").json()["metrics"]] == [key]
    assert problem(served.post("/v1/metrics", json={"key": key}), 409)["type"] == (
        "/problems/conflict"
    )
    bad = problem(served.post("/v1/metrics", json={"key": "k", "aggregationType": "MEDIAN"}), 422)
    assert bad["errors"][0]["field"] == "aggregationType"
    bad = problem(served.post("/v1/metrics", json={"key": "k", "colour": "red"}), 422)
    assert bad["errors"] == [{"field": "colour", "message": "Extra inputs are not permitted"}]
    assert (
        problem(served.post("/v1/metrics", json={"name": "no key"}), 422)["errors"][0]["field"]
        == "key"
    )
    changed = served.patch(path, json={"unit": "GiB", "description": "stored"})
    assert changed.status_code == 200 and changed.json()["unit"] == "GiB"
    assert problem(served.patch(path, json={"precision": 2}), 422)["errors"][0]["field"] == (
        "precision"
    )
    deleted = served.delete(path, params={"purge": "true"})
    assert deleted.status_code == 200 and deleted.json() == {"deletedRecords": 0}
    assert problem(served.get(path), 404)["type"] == "/problems/not-found"
    assert problem(served.get("/v1/nothing"), 404)
    assert problem(served.http.put(served.url + "/v1/metrics"), 405)


def test_hostile_names_and_metadata_round_trip(served: Served) -> None:
    """Subject ids, subject types, sources and metadata with separators, quotes, backslashes,
    newlines (in metadata) and non-ASCII text come back exactly, one series each."""
    define(served, aggregationType="SUM", precision=2)
    records = [
        {"id": f"r{i}\\,\"=", "metricKey": "gb", "subjectType": "org", "subjectId": name,
         "quantity": f"{i}.25", "timestamp": T0, "source": name,
         "metadata": {name: name, "line": "one\ntwo\r\n", "nested": {"q": '"'}}}
        for i, name in enumerate(HOSTILE)
    ]  # fmt: skip
    one = served.post("/v1/usage/records", json=records[0])
    assert one.status_code == 201, one.text
    assert one.json() == {**records[0], "quantity": "0.25", "orgId": None,
                          "timestamp": "2026-03-10T12:00:00Z"}  # fmt: skip
    batch = served.post("/v1/usage/records/batch", json={"records": records})
    assert batch.status_code == 200, batch.text
    assert batch.json()["accepted"] == len(records)
    assert batch.json()["ids"] == [r["id"] for r in records]
    for i, record in enumerate(records):
        got = served.get(
            "/v1/usage/records",
            params={"metricKey": "gb", "subjectType": "org", "subjectId": record["subjectId"]},
        ).json()
        assert [r["id"] for r in got["records"]] == [record["id"]]  # fmt: skip
        stored = got["records"][0]
        assert stored["metadata"] == record["metadata"]
        assert stored["source"] == record["source"]
        assert total(served, record["subjectId"]) == Decimal(f"{i}.25")
    bad = problem(served.post("/v1/usage/records", json={**records[0], "subjectId": "a\nb"}), 422)
    assert bad["errors"][0]["field"] == "subjectId"


def test_decimals_are_exact(served: Served) -> None:
    """Quantities sent as JSON numbers or strings, with every digit the metric keeps, sum to
    exactly what Python's decimal gives; outputs are decimal strings."""
    define(served, aggregationType="SUM", precision=9)
    values = ["0.1", "0.2", "0.000000001", "123456789.123456789", "9007199.254740993", "1e-9",
              "3.30", "0.7"]  # fmt: skip
    body = "{\"records\": [" + ",".join(
        f'{{"metricKey":"gb","subjectType":"org","subjectId":"acme","timestamp":"{T0}",'
        f'"quantity":{value if i % 2 else json.dumps(value)}}}'
        for i, value in enumerate(values)
    ) + "]}"  # fmt: skip
    answer = served.post("/v1/usage/records/batch", data=body.encode(),
                         headers={"content-type": "application/json"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert total(served, "acme") == sum((Decimal(v) for v in values), Decimal(0))
    got = served.get("/v1/usage/records", params={"metricKey": "gb"}).json()["records"]
    assert sorted(Decimal(r["quantity"]) for r in got) == sorted(Decimal(v) for v in values)
    assert all(isinstance(r["quantity"], str) for r in got)
    too_fine = served.post(
        "/v1/usage/records",
        json={
            "metricKey": "gb",
            "subjectType": "org",
            "subjectId": "acme",
            "quantity": "0.0000000001",
        },
    )
    assert problem(too_fine, 422)["errors"][0]["field"] == "quantity"  # fmt: skip


def test_batches_are_all_or_nothing_and_retries_count_once(served: Served) -> None:
    """One bad record stores none of its batch and is named by index; the same batch sent
    twice (a retry) counts once; records without ids get ids the answer lists."""
    define(served, aggregationType="SUM", precision=2)
    good = [{"metricKey": "gb", "subjectType": "org", "subjectId": "acme", "quantity": "1.10",
             "timestamp": T0, "id": f"req-{i}"} for i in range(5)]  # fmt: skip
    bad = [*good[:3], {**good[3], "quantity": "1.001"}, good[4]]
    err = problem(served.post("/v1/usage/records/batch", json={"records": bad}), 422)
    assert err["errors"][0]["field"] == "records[3].quantity"
    assert total(served, "acme") == 0
    for _ in range(2):
        answer = served.post("/v1/usage/records/batch", json={"records": good})
        assert answer.status_code == 200 and answer.json()["ids"] == [r["id"] for r in good]
    assert total(served, "acme") == Decimal("5.50")
    fresh = served.post("/v1/usage/records/batch", json={"records": [
        {k: v for k, v in good[0].items() if k != "id"}, {**good[0], "id": None}]})  # fmt: skip
    ids = fresh.json()["ids"]
    assert len(set(ids)) == 2 and all(isinstance(i, str) and i for i in ids)
    assert total(served, "acme") == Decimal("7.70")
    for body, field in (([1], ""), ({"records": [1]}, "records[0]"), ({"records": "x"}, "records"),
                        ({"records": [], "more": 1}, "more")):  # fmt: skip
        got = problem(served.post("/v1/usage/records/batch", json=body), 422)
        assert got["errors"][0]["field"] == field, got


def test_limits_and_malformed_bodies(served: Served) -> None:
    """More than 10,000 records or 16 MiB is 413; a body that is not JSON is 400."""
    define(served, aggregationType="COUNT")
    record = {"metricKey": "gb", "subjectType": "org", "subjectId": "a"}
    assert problem(served.post("/v1/usage/records/batch", json={"records": [record] * 10_001}),
                   413)["errors"][0]["field"] == "records"  # fmt: skip
    huge = b'{"records": [' + b" " * (16 * 1024 * 1024) + b"]}"
    assert problem(served.post("/v1/usage/records/batch", data=huge), 413)
    assert problem(served.post("/v1/usage/records/batch", data=b"{nope"), 400)
    assert problem(served.post("/v1/usage/records", data=b""), 400)
    ok = served.post("/v1/usage/records/batch", json={"records": [record] * 10_000})
    assert ok.status_code == 200 and ok.json()["accepted"] == 10_000
    assert served.get("/v1/usage/summary", params={
        "metricKey": "gb", "subjectType": "org", "subjectId": "a"}).json()["totalQuantity"] == (
        "10000")  # fmt: skip


def test_queries_name_their_parameters(served: Served) -> None:
    """Bad query parameters are 422 naming the parameter as sent (``from``, ``limit``)."""
    define(served)
    for params, field in (({"metricKey": "gb", "from": "yesterday"}, "from"),
                          ({"metricKey": "gb", "limit": "many"}, "limit"),
                          ({}, "metricKey"),
                          # a filter naming what no record can have is a mistake, not "none"
                          ({"metricKey": "gb", "subjectId": ""}, "subjectId"),
                          ({"metricKey": "gb", "subjectType": "a\nb"}, "subjectType"),
                          ({"metricKey": "gb", "orgId": "o" * 257}, "orgId")):  # fmt: skip
        got = problem(served.get("/v1/usage/records", params=params), 422)
        assert got["errors"][0]["field"] == field
    got = problem(served.get("/v1/usage/export", params={"subjectId": ""}), 422)
    assert got["errors"][0]["field"] == "subjectId"
    got = problem(served.get("/v1/usage/summaries", params={"metricKey": "gb", "from": T0}), 422)
    assert got["errors"][0]["field"] == "to"
    got = served.get("/v1/usage/summaries", params={"metricKey": "gb", "from": T0,
                                                     "to": "2026-04-01T00:00:00Z"})  # fmt: skip
    assert got.status_code == 200 and got.json() == {"summaries": []}


def test_export_streams_ndjson_and_csv_that_reimport(served: Served, tmp_path: Path) -> None:
    """The export route streams every record as NDJSON or CSV, which ``tsmeter usage import``
    reads back into another store exactly."""
    define(served, aggregationType="SUM", precision=3)
    records = [{"id": f"e{i}", "metricKey": "gb", "subjectType": "org",
                "subjectId": HOSTILE[i % len(HOSTILE)], "quantity": f"{i}.125",
                "timestamp": f"2026-03-{1 + i % 28:02d}T0{i % 10}:00:00.123456Z",
                "metadata": {"n": i, "s": "=cmd|' /C calc'!A0"}} for i in range(3000)]  # fmt: skip
    assert served.post("/v1/usage/records/batch", json={"records": records}).status_code == 200
    want = sorted((r["id"], r["subjectId"], Decimal(r["quantity"])) for r in records)
    for fmt, suffix in (("ndjson", "jsonl"), ("csv", "csv")):
        with served.http.get(served.url + "/v1/usage/export",
                             params={"metricKey": "gb", "format": fmt}, stream=True,
                             timeout=60) as answer:  # fmt: skip
            assert answer.status_code == 200
            assert answer.headers.get("transfer-encoding") == "chunked"
            text = b"".join(answer.iter_content(65536)).decode()
        if fmt == "ndjson":
            assert answer.headers["content-type"] == "application/x-ndjson"
            rows = [json.loads(line) for line in text.splitlines()]
        else:
            assert answer.headers["content-type"].startswith("text/csv")
            rows = list(csv.DictReader(io.StringIO(text, newline="")))
        assert len(rows) == len(records)
        dump = tmp_path / f"export.{suffix}"
        dump.write_text(text, newline="")
        store = f"sqlite:///{tmp_path / f'copy-{fmt}.db'}"
        cli = [sys.executable, "-m", "tsmeter", "--store", store]
        env_ok = {"cwd": tmp_path, "check": True, "capture_output": True}
        subprocess.run([*cli, "--create", "metric", "define", "gb", "--aggregation-type", "sum",
                        "--precision", "3"], **env_ok)  # type: ignore[call-overload]  # fmt: skip
        subprocess.run([*cli, "usage", "import", str(dump)], **env_ok)  # type: ignore[call-overload]
        import tsmeter

        with tsmeter.connect(store, create=False) as copy:
            got = copy.get_usage("gb", limit=None)
        assert sorted((r.id, r.subject_id, r.quantity) for r in got) == want
        assert all(r.metadata["s"] == "=cmd|' /C calc'!A0" for r in got)
    assert problem(served.get("/v1/usage/export", params={"metricKey": "none"}), 404)
    assert problem(served.get("/v1/usage/export", params={"format": "xml"}), 422)


def test_thresholds_alerts_and_quotas(served: Served) -> None:
    """Thresholds are created, read, listed, changed and deleted; a BLOCK threshold refuses
    ``enforce=true`` records with 403 quota-exceeded; alerts opened by an evaluation are
    listed, acknowledged and resolved."""
    define(served, aggregationType="SUM", precision=2)
    made = served.post("/v1/thresholds", json={
        "metricKey": "gb", "subjectType": "org", "subjectId": "acme", "threshold": 10,
        "action": "block", "periodType": "MONTHLY"})  # fmt: skip
    assert made.status_code == 201, made.text
    limit = made.json()
    assert limit["threshold"] == "10" and limit["warnThreshold"] == "8"
    assert served.get(f"/v1/thresholds/{limit['id']}").json() == limit
    assert served.get("/v1/thresholds", params={"metricKey": "gb"}).json() == {
        "thresholds": [limit]}  # fmt: skip
    bad = problem(served.post("/v1/thresholds", json={
        "metricKey": "gb", "subjectType": "org", "threshold": "-1"}), 422)  # fmt: skip
    assert bad["errors"][0]["field"] == "threshold"
    assert problem(served.post("/v1/thresholds", json={"metricKey": "gb", "threshold": 1}),
                   422)["errors"][0]["field"] == "subjectType"  # fmt: skip
    changed = served.patch(f"/v1/thresholds/{limit['id']}", json={"threshold": "12.5"})
    assert changed.status_code == 200 and changed.json()["threshold"] == "12.5"
    now = {"metricKey": "gb", "subjectType": "org", "subjectId": "acme", "quantity": "12"}
    assert served.post("/v1/usage/records", json=now, params={"enforce": "true"}).status_code == 201
    over = problem(served.post("/v1/usage/records", json=now, params={"enforce": "true"}), 403)
    assert over["type"] == "/problems/quota-exceeded"
    over = problem(served.post("/v1/usage/records/batch", json={"records": [now]},
                               params={"enforce": "true"}), 403)  # fmt: skip
    subprocess.run([sys.executable, "-m", "tsmeter", "--store", served.store, "alert",
                    "evaluate"], cwd=served.home, check=True, capture_output=True,
                   env=_env(served))  # fmt: skip
    alerts = served.get("/v1/alerts", params={"metricKey": "gb"}).json()["alerts"]
    assert [a["level"] for a in alerts] == ["approaching"]
    alert = alerts[0]
    assert alert["actualValue"] == "12.00" or Decimal(alert["actualValue"]) == 12
    acked = served.post(f"/v1/alerts/{alert['id']}/acknowledge")
    assert acked.status_code == 200 and acked.json()["status"] == "ACKNOWLEDGED"
    resolved = served.post(f"/v1/alerts/{alert['id']}/resolve")
    assert resolved.status_code == 200 and resolved.json()["status"] == "RESOLVED"
    assert problem(served.post("/v1/alerts/nope/resolve"), 404)
    assert problem(served.get("/v1/alerts", params={"status": "SLEEPY"}), 422)["errors"][0][
        "field"] == "status"  # fmt: skip
    assert served.delete(f"/v1/thresholds/{limit['id']}").status_code == 204
    assert problem(served.get(f"/v1/thresholds/{limit['id']}"), 404)


def test_operations(served: Served) -> None:
    """/healthz and /readyz answer; /metrics counts accepted and rejected records and times
    requests by route template."""
    assert served.get("/healthz").json() == {"status": "ok"}
    assert served.get("/readyz").json() == {"status": "ready", "problems": []}
    define(served, aggregationType="COUNT")
    record = {"metricKey": "gb", "subjectType": "org", "subjectId": "a"}
    served.post("/v1/usage/records/batch", json={"records": [record] * 7})
    served.post("/v1/usage/records/batch", json={"records": [record, {"metricKey": "gb"}]})
    text = served.get("/metrics").text
    assert "tsmeter_api_records_accepted_total 7.0" in text
    assert 'tsmeter_api_records_rejected_total{reason="validation"} 2.0' in text
    assert 'route="/v1/usage/records/batch",status="200"' in text
    assert ("tsmeter_outbox_pending_records" in text) == ("influxdb://" in served.store)


def _env(served: Served) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("TSMETER_")}
    env.update(XDG_DATA_HOME=str(served.home), PYTHONPATH=str(ROOT / "src"))
    if "influxdb://" in served.store:
        env["TSMETER_OUTBOX"] = str(served.home / "outbox.db")
    return env


def test_values_of_the_wrong_json_type_are_named_before_any_lookup(served: Served) -> None:
    """An object, number or array where a name goes is 422 naming the field (it once reached
    the catalog's query and came back as 503); enum names are taken in any case."""
    define(served, aggregationType="sum")
    base = {"metricKey": "gb", "subjectType": "org", "threshold": "1"}
    for path, body, field in (
        ("/v1/thresholds", {**base, "orgId": {"a": 1}}, "orgId"),
        ("/v1/thresholds", {**base, "orgId": 1.5}, "orgId"),
        ("/v1/thresholds", {**base, "notifyEmails": ["a@b.example", 5]}, "notifyEmails[1]"),
        ("/v1/metrics", {"key": "k", "orgId": ["x"]}, "orgId"),
        ("/v1/usage/records", {"metricKey": ["gb"], "subjectType": "o", "subjectId": "a"},
         "metricKey"),
        ("/v1/usage/records/batch", {"records": [
            {"metricKey": "gb", "subjectType": "o", "subjectId": "a", "orgId": {}}]},
         "records[0].orgId"),
    ):  # fmt: skip
        assert problem(served.post(path, json=body), 422)["errors"][0]["field"] == field, body
    made = served.post("/v1/thresholds", json={**base, "action": "warn", "periodType": "daily"})
    assert made.status_code == 201 and made.json()["action"] == "WARN"


def test_org_scoped_metrics_and_summaries(served: Served) -> None:
    """A metric of an org's own is found with orgId (and with allOrgs), its records carry the
    org, and summaries per day add up exactly for every aggregation read back."""
    org = 'org ,="\\ é'
    define(served, "calls", aggregationType="SUM", precision=3, orgId=org)
    define(served, "calls", aggregationType="COUNT")
    assert served.get("/v1/metrics/calls", params={"orgId": org}).json()["aggregationType"] == (
        "SUM"
    )
    assert served.get("/v1/metrics/calls").json()["aggregationType"] == "COUNT"
    assert [m["orgId"] for m in served.get("/v1/metrics", params={"orgId": org}).json()[
        "metrics"]] == [org]  # fmt: skip
    assert len(served.get("/v1/metrics", params={"allOrgs": "true"}).json()["metrics"]) == 2
    values = ["0.001", "2.5", "7.125", "0.374"]
    records = [{"metricKey": "calls", "orgId": org, "subjectType": "team", "subjectId": "t1",
                "quantity": v, "timestamp": f"2026-03-{10 + i // 2}T0{i}:30:00Z"}
               for i, v in enumerate(values)]  # fmt: skip
    assert served.post("/v1/usage/records/batch", json={"records": records}).status_code == 200
    daily = {"metricKey": "calls", "orgId": org, "periodType": "DAILY",
             "from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"}  # fmt: skip
    got = served.get("/v1/usage/summaries", params=daily).json()["summaries"]
    assert [(s["periodStart"], s["totalQuantity"], s["recordCount"]) for s in got] == [
        ("2026-03-10T00:00:00Z", "2.501", 2), ("2026-03-11T00:00:00Z", "7.499", 2)]  # fmt: skip
    summary = served.get("/v1/usage/summary", params={
        "metricKey": "calls", "orgId": org, "subjectType": "team", "subjectId": "t1",
        "periodType": "MONTHLY", "at": "2026-03-31T23:59:59Z"}).json()  # fmt: skip
    assert Decimal(summary["totalQuantity"]) == sum(map(Decimal, values), Decimal(0))
    assert (summary["min"], summary["max"], summary["lastValue"]) == ("0.001", "7.125", "0.374")
    stored = served.get("/v1/usage/records", params={"metricKey": "calls", "orgId": org,
                                                      "limit": 2}).json()["records"]  # fmt: skip
    assert [r["quantity"] for r in stored] == ["0.001", "2.500"]
    assert {r["orgId"] for r in stored} == {org}
