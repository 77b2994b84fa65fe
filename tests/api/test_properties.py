"""A property-based run (schemathesis) against the live ``tsmeter serve`` process and its own
OpenAPI document: bad input always gets a 4xx problem+json naming the problem, never a 5xx, and
nothing stored is lost.

A known set of records is recorded first on a metric of its own (``KEPT``); then every
operation of the document gets inputs that break its schema (schemathesis' negative mode) and
inputs that follow it (positive mode; those naming a metric name ``FUZZED`` instead, so that
valid requests reach the store), all with an admin key, and a few with the key missing or
broken. The budget is fixed and the run derandomized: the same
requests every time. Afterwards ``KEPT``'s records and totals are exactly what was sent, over
HTTP while the server runs and in the store after it stopped. Run on the embedded store and
on influxd (where the fuzzed strings reach InfluxQL queries).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.api.server import Served

KEPT = "kept_usage"
FUZZED = "fuzzed"
DAY = datetime(2026, 11, 10, tzinfo=UTC)
EXAMPLES = 12  # per operation and mode: the whole run stays well under a minute


def known_records() -> list[dict[str, Any]]:
    """The records that must survive the run: exact cents, several subjects, one of them hostile."""
    return [
        {
            "id": f"kept-{i:04d}",
            "metricKey": KEPT,
            "subjectType": "org",
            "subjectId": ("org-'\"; DROP TABLE usage --" if i % 7 == 0 else f"org-{i % 5}"),
            "quantity": f"{(i * 37) % 1000}.{i % 100:02d}",
            "timestamp": (DAY + timedelta(seconds=97 * i)).isoformat(),
        }
        for i in range(300)
    ]


def expected_totals() -> dict[str, tuple[int, Decimal]]:
    """Per subject: the number of records and their sum, by Python's Decimal."""
    totals: dict[str, tuple[int, Decimal]] = {}
    for r in known_records():
        count, total = totals.get(r["subjectId"], (0, Decimal(0)))
        totals[r["subjectId"]] = (count + 1, total + Decimal(r["quantity"]))
    return totals


def served_totals(client: httpx.Client) -> dict[str, tuple[int, Decimal]]:
    """``KEPT``'s daily summaries as the server answers them."""
    response = client.get("/v1/usage/summaries", params={
        "metricKey": KEPT, "periodType": "DAILY", "from": DAY.isoformat(),
        "to": (DAY + timedelta(days=1)).isoformat()})  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    summaries = body["summaries"] if isinstance(body, dict) else body
    return {s["subjectId"]: (s["recordCount"], Decimal(s["totalQuantity"])) for s in summaries}


def wait_for_totals(client: httpx.Client, expected: dict[str, tuple[int, Decimal]]) -> None:
    """``KEPT``'s totals as the server answers them become ``expected`` (on influxd, once the
    server's outbox has delivered), and stay so."""
    deadline = time.monotonic() + 60
    while served_totals(client) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served_totals(client) == expected


@pytest.fixture(params=["embedded", "influxdb"])
def keyed_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Served, str]]:
    """``tsmeter serve`` on a new embedded store, or on a fresh influxd database (its outbox and
    state file in ``tmp_path``), and an admin API key made before it started."""
    import tsmeter

    if request.param == "embedded":
        url, root_args = f"sqlite:///{tmp_path}/usage.db", ()
    else:
        influxd, db = request.getfixturevalue("influx_db")
        url = f"influxdb://127.0.0.1:{influxd.port}/{db}?state={tmp_path / 'state.db'}"
        root_args = ("--outbox", str(tmp_path / "outbox.db"))
    with tsmeter.connect(url, mirror=False, outbox=False) as meter:
        key = meter.api_keys.create("properties", ["admin"]).key
    with Served(url, tmp_path, root_args=root_args, args=()) as process:
        yield process, key


def is_problem(response: Any) -> str | None:
    """What is wrong with a 4xx answer, or None when it is a problem+json naming a problem."""
    # schemathesis keeps each header's values as a list, under its name in lower case
    values = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [""])
    content_type = values[0] if isinstance(values, list) else values
    if not content_type.startswith("application/problem+json"):
        return f"Content-Type {content_type!r}"
    try:
        body = json.loads(response.content)
    except ValueError:
        return "a body that is not JSON"
    if not isinstance(body, dict):
        return f"a body that is not an object: {body!r}"
    if body.get("status") != response.status_code:
        return f"status {body.get('status')!r} in the body"
    for key in ("type", "title", "detail"):
        if not isinstance(body.get(key), str) or not body[key].strip():
            return f"no {key}: {body!r}"
    errors = body.get("errors")
    if not isinstance(errors, list):
        return f"errors is not a list: {body!r}"
    if response.status_code == 422 and not errors:
        return f"a 422 naming no field: {body!r}"
    for error in errors:
        named = isinstance(error, dict) and isinstance(error.get("field"), str)
        if not (named and isinstance(error.get("message"), str) and error["message"].strip()):
            return f"an error without field and message: {error!r}"
    return None


def aim_at_fuzzed(case: schemathesis.Case) -> None:
    """Point a valid request that names a metric at ``FUZZED`` in the global scope (it then
    reaches the store instead of a metric that does not exist)."""
    bodies = [case.body] if isinstance(case.body, dict) else []
    if bodies and isinstance(case.body.get("records"), list):
        bodies += [r for r in case.body["records"] if isinstance(r, dict)]
    for body in bodies:
        body.pop("orgId", None)
        if "metricKey" in body:
            body["metricKey"] = FUZZED
        if case.operation.path == "/v1/metrics" and "key" in body:
            body["key"] = FUZZED
    if case.query:
        case.query.pop("orgId", None)
        if "metricKey" in case.query:
            case.query["metricKey"] = FUZZED
    if case.path_parameters and "key" in case.path_parameters:
        case.path_parameters["key"] = FUZZED


def fuzz(
    operation: Any,
    mode: GenerationMode,
    url: str,
    key: str | None,
    session: requests.Session,
    failures: list[str],
    examples: int = EXAMPLES,
) -> int:
    """Send ``examples`` generated requests to one operation, with ``key`` as the API key
    (None: headers as generated, a missing or broken key among them); add what was wrong with
    an answer to ``failures``; return how many requests were sent."""
    calls = 0
    auth = {"Authorization": f"Bearer {key}"} if key is not None else None

    @given(case=operation.as_strategy(generation_mode=mode, headers=auth))
    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def run(case: schemathesis.Case) -> None:
        nonlocal calls
        if mode is GenerationMode.POSITIVE:
            aim_at_fuzzed(case)
        response = case.call(base_url=url, session=session, timeout=30)
        calls += 1
        status = response.status_code
        wrong = None
        if status >= 500:
            wrong = f"status {status}"
        elif status >= 400:
            wrong = is_problem(response)
        elif mode is GenerationMode.NEGATIVE and case.meta is not None:
            # schemathesis knows when its negated input is still valid once serialised
            try:
                case.validate_response(response, checks=[
                    schemathesis.checks.negative_data_rejection])  # fmt: skip
            except (AssertionError, BaseExceptionGroup) as exc:
                wrong = f"accepted invalid input: {str(exc)[:300]}"
        if wrong is not None:
            failures.append(f"{operation.label} ({mode.value}): {wrong}\n"
                            f"    {case.as_curl_command()}\n"
                            f"    -> {response.content[:400]!r}")  # fmt: skip

    try:
        run()
    except Unsatisfiable:
        # nothing can be broken: no input (``/healthz``), or only a string path parameter
        # beside the key given (every string is a valid id)
        assert mode is GenerationMode.NEGATIVE, operation.label
    return calls


def test_fuzzed_requests_get_problems_and_lose_nothing(
    keyed_server: tuple[Served, str],
) -> None:
    server, key = keyed_server
    client = httpx.Client(base_url=server.url, timeout=30,
                          headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    defined = client.post("/v1/metrics", json={"key": KEPT, "aggregationType": "SUM",
                                               "precision": 2})  # fmt: skip
    assert defined.status_code == 201, defined.text
    sent = known_records()
    batch = client.post("/v1/usage/records/batch", json={"records": sent[:250]})
    assert batch.status_code == 200 and batch.json()["accepted"] == 250, batch.text
    for r in sent[250:]:
        assert client.post("/v1/usage/records", json=r).status_code == 201
    expected = expected_totals()
    wait_for_totals(client, expected)

    schema = schemathesis.openapi.from_url(f"{server.url}/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    session = requests.Session()
    failures: list[str] = []
    calls = 0

    for operation in operations:
        # ``FUZZED`` exists again, whatever the operation before did to it
        fuzzed = {"key": FUZZED, "aggregationType": "SUM", "precision": 6}
        assert client.post("/v1/metrics", json=fuzzed).status_code in (201, 409)
        for mode in (GenerationMode.NEGATIVE, GenerationMode.POSITIVE):
            calls += fuzz(operation, mode, server.url, key, session, failures)
        # the key itself missing or broken: refused before anything else is looked at
        calls += fuzz(operation, GenerationMode.NEGATIVE, server.url, None, session, failures,
                      examples=3)  # fmt: skip

    assert calls >= len(operations) * EXAMPLES
    assert not failures, f"{len(failures)} of {calls} answers were wrong:\n" + "\n".join(
        failures[:20]
    )
    # nothing stored is lost: over HTTP, then in the store once the server has stopped
    wait_for_totals(client, expected)
    client.close()
    assert server.stop() == 0, server.log_tail()
    import tsmeter

    with tsmeter.connect(server.store, create=False, mirror=False, outbox=False) as meter:
        summaries = meter.get_usage_summaries(KEPT, "DAILY", start=DAY,
                                              end=DAY + timedelta(days=1))  # fmt: skip
        stored = {s.subject_id: (s.record_count, Decimal(str(s.total_quantity)))
                  for s in summaries}  # fmt: skip
        ids = {r.id for r in meter.iter_usage(KEPT)}
    assert stored == expected
    assert ids == {r["id"] for r in sent}
