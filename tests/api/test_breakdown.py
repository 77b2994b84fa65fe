"""``GET /v1/usage/breakdown`` against a real ``tsmeter serve`` on the embedded store and
influxd: usage grouped by dimensions and filtered by their values, for a SUM, a UNIQUE_COUNT
and a TIME_WEIGHTED_SUM metric, each total compared with a brute force over the records sent
(Decimal arithmetic here, not the server's); hostile dimension values are data; bad
parameters are problem+json naming them."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from fractions import Fraction
from typing import Any

from tests.api.server import Served
from tests.api.test_server import problem

NOV = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "periodType": "MONTHLY"}
MODELS = ["gpt-4o", 'a,b "c"=d', "back\\slash", "ünï €", None]
REGIONS = ["eu", "us", None]


def _define(served: Served, **body: Any) -> None:
    answer = served.post("/v1/metrics", json=body)
    assert answer.status_code == 201, answer.text


def _send(served: Served, records: list[dict[str, Any]]) -> None:
    answer = served.post("/v1/usage/records/batch", json={"records": records})
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == len(records)


def _breakdown(served: Served, key: str, **params: Any) -> list[dict[str, Any]]:
    answer = served.get("/v1/usage/breakdown", params={"metricKey": key, **NOV, **params})
    assert answer.status_code == 200, answer.text
    summaries: list[dict[str, Any]] = answer.json()["summaries"]
    return summaries


def _token_records() -> list[dict[str, Any]]:
    records = []
    for i in range(60):
        metadata: dict[str, Any] = {}
        model, region = MODELS[i % len(MODELS)], REGIONS[i % len(REGIONS)]
        if model is not None:
            metadata["model"] = model
        if region is not None:
            metadata["region"] = region
        records.append({
            "id": f"t-{i}", "metricKey": "tokens", "subjectType": "org",
            "subjectId": f"org-{i % 2}", "quantity": f"{i}.{i % 100:02d}",
            "timestamp": f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:00:00Z", "metadata": metadata,
        })  # fmt: skip
    # one outside November, one of another metric: neither counts
    records.append({**records[0], "id": "t-oct", "timestamp": "2026-10-31T23:59:59Z"})
    return records


def test_sum_grouped_and_filtered_matches_a_brute_force(served: Served) -> None:
    """Per subject and (model, region): the sum and count of the records in November, a
    record without a value in a group of its own (null); a filter keeps exactly the records
    with that value, or without one (``model=``); hostile values round-trip as data."""
    _define(served, key="tokens", aggregationType="SUM", precision=2,
            dimensions=[{"name": "model"}, {"name": "region", "values": ["eu", "us"]}])  # fmt: skip
    records = _token_records()
    _send(served, records)
    november = [r for r in records if r["timestamp"].startswith("2026-11")]

    def expected(
        group_by: tuple[str, ...], keep: Any = lambda m: True
    ) -> dict[tuple[Any, ...], tuple[Decimal, int]]:
        sums: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [Decimal(0), 0])
        for r in november:
            if keep(r["metadata"]):
                key = (r["subjectId"], *(r["metadata"].get(n) for n in group_by))
                sums[key][0] += Decimal(r["quantity"])
                sums[key][1] += 1
        return {k: (v[0], v[1]) for k, v in sums.items()}

    def got(summaries: list[dict[str, Any]], group_by: tuple[str, ...]) -> dict[Any, Any]:
        out = {}
        for s in summaries:
            assert s["periodStart"] == "2026-11-01T00:00:00Z"
            dims = s["dimensions"] or {}
            assert list(dims) == list(group_by)
            key = (s["subjectId"], *(dims[n] for n in group_by))
            assert key not in out
            out[key] = (Decimal(s["totalQuantity"]), s["recordCount"])
        return out

    by_both = _breakdown(served, "tokens", groupBy=["model", "region"])
    assert got(by_both, ("model", "region")) == expected(("model", "region"))
    assert len(by_both) > 10
    commas = _breakdown(served, "tokens", groupBy="region,model")
    assert got(commas, ("region", "model")) == expected(("region", "model"))
    for model in MODELS:
        wanted = expected(("region",), lambda m, model=model: m.get("model") == model)
        where = f"model={'' if model is None else model}"
        assert got(_breakdown(served, "tokens", groupBy="region", where=where), ("region",)) == (
            wanted
        ), model
    both = _breakdown(served, "tokens", where=["model=gpt-4o", "region=eu"])
    keep = lambda m: m.get("model") == "gpt-4o" and m.get("region") == "eu"  # noqa: E731
    assert {(s["subjectId"],): (Decimal(s["totalQuantity"]), s["recordCount"])
            for s in both} == expected((), keep)  # fmt: skip
    one = _breakdown(served, "tokens", groupBy="model", subjectId="org-1", subjectType="org")
    assert got(one, ("model",)) == {
        k: v for k, v in expected(("model",)).items() if k[0] == "org-1"
    }
    # no grouping, no filter: the subject's summary for the month
    plain = _breakdown(served, "tokens")
    for s in plain:
        summary = served.get("/v1/usage/summary", params={
            "metricKey": "tokens", "subjectType": "org", "subjectId": s["subjectId"],
            "periodType": "MONTHLY", "at": "2026-11-15T00:00:00Z"}).json()  # fmt: skip
        assert Decimal(s["totalQuantity"]) == Decimal(summary["totalQuantity"])


def test_unique_count_and_time_weighted_sum(served: Served) -> None:
    """Distinct users per region; GB-days held over November with a reading carried in from
    October, both compared with a computation here."""
    _define(served, key="mau", aggregationType="UNIQUE_COUNT", uniqueProperty="user_id",
            dimensions=[{"name": "region"}])  # fmt: skip
    users = [
        {"id": f"u-{i}", "metricKey": "mau", "subjectType": "org", "subjectId": "org-1",
         "quantity": "1", "timestamp": f"2026-11-{1 + i % 27:02d}T08:00:00Z",
         "metadata": {"user_id": f"user-{i % 7}", "region": ["eu", "us"][i % 2]}}
        for i in range(40)
    ]  # fmt: skip
    _send(served, users)
    distinct: dict[str, set[str]] = defaultdict(set)
    for u in users:
        distinct[u["metadata"]["region"]].add(u["metadata"]["user_id"])
    by_region = _breakdown(served, "mau", groupBy="region")
    assert {s["dimensions"]["region"]: Decimal(s["totalQuantity"]) for s in by_region} == {
        region: Decimal(len(ids)) for region, ids in distinct.items()
    }
    everyone = {u["metadata"]["user_id"] for u in users}
    (total,) = _breakdown(served, "mau")
    assert Decimal(total["totalQuantity"]) == len(everyone)

    _define(served, key="disk", aggregationType="TIME_WEIGHTED_SUM", timeUnit="DAY",
            precision=3, dimensions=[{"name": "tier"}])  # fmt: skip
    readings = [
        ("2026-10-31T12:00:00Z", "4", "ssd"),
        ("2026-11-02T00:00:00Z", "10", "ssd"),
        ("2026-11-11T06:00:00Z", "20.5", "ssd"),
        ("2026-11-20T00:00:00Z", "7", "hdd"),
    ]
    _send(served, [
        {"id": f"d-{i}", "metricKey": "disk", "subjectType": "org", "subjectId": "org-1",
         "quantity": q, "timestamp": t, "metadata": {"tier": tier}}
        for i, (t, q, tier) in enumerate(readings)
    ])  # fmt: skip
    day = Fraction(1)
    ssd = (
        4 * day * 1
        + 10 * (Fraction(9) + Fraction(6, 24))
        + Fraction(41, 2) * (Fraction(30) - Fraction(10) - Fraction(6, 24))
    )
    hdd = 7 * Fraction(11)
    by_tier = _breakdown(served, "disk", groupBy="tier", asOf="2026-12-05T00:00:00Z")
    assert {s["dimensions"]["tier"]: Fraction(Decimal(s["totalQuantity"])) for s in by_tier} == {
        "ssd": ssd,
        "hdd": hdd,
    }
    (both,) = _breakdown(served, "disk", asOf="2026-12-05T00:00:00Z")
    assert Fraction(Decimal(both["totalQuantity"])) == ssd + hdd
    # read as at the 15th: the last ssd reading holds until then, nothing of hdd yet
    (mid,) = _breakdown(served, "disk", where="tier=ssd", asOf="2026-11-15T00:00:00Z")
    partial = (
        4 * day
        + 10 * (Fraction(9) + Fraction(6, 24))
        + Fraction(41, 2) * (Fraction(4) - Fraction(6, 24))
    )
    assert Fraction(Decimal(mid["totalQuantity"])) == partial


def test_bad_parameters_are_named(served: Served) -> None:
    """A filter without ``=``, a name given twice or not an identifier, a missing range, an
    unknown metric: each a problem naming what is wrong."""
    _define(served, key="tokens", dimensions=[{"name": "model"}])
    for params, field in (({"where": "model"}, "where"),
                          ({"where": ["model=a", "model=b"]}, "where"),
                          ({"where": "mo del=a"}, "where"),
                          ({"from": "soon"}, "from"),
                          ({"to": None}, "to"),
                          ({"periodType": "FORTNIGHTLY"}, "periodType"),
                          ({"asOf": "later"}, "asOf")):  # fmt: skip
        query = {"metricKey": "tokens", **NOV, **params}
        sent = {k: v for k, v in query.items() if v is not None}
        got = problem(served.get("/v1/usage/breakdown", params=sent), 422)
        assert got["errors"][0]["field"] == field, (params, got)
    colour = {"metricKey": "tokens", **NOV, "groupBy": "colour"}
    got = problem(served.get("/v1/usage/breakdown", params=colour), 422)
    assert got["errors"][0]["field"].startswith("groupBy"), got
    got = problem(served.get("/v1/usage/breakdown", params={"metricKey": "nope", **NOV}), 404)
    assert got["type"] == "/problems/not-found"
