"""Declared state on every catalog: plan, apply, idempotency, pruning, exact limits, hostile
names, and a declaration that cannot apply whole changes nothing (Meter.plan / Meter.apply,
define_metric and create_threshold with exist_ok)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tsmeter.errors import ConflictError, NotFoundError
from tsmeter.metering.declared import DeclarationError, DesiredState, parse
from tsmeter.metering.meter import Meter

DOC: dict[str, Any] = {
    "metrics": [
        {"key": "api_calls", "aggregation_type": "count", "unit": "calls", "precision": 0},
        {"key": "spend_usd", "org_id": "acme", "unit": "USD", "precision": 2,
         "rounding": "half_up"},
    ],
    "channels": {
        "ops": {"emails": ["ops@example.com"], "webhook": "https://hooks.example.com/t?x=1"},
        "finance": {"emails": ["cfo@example.com"]},
    },
    "thresholds": [
        {"metric": "api_calls", "subject_type": "org", "limit": Decimal("10000"),
         "action": "block", "notify": ["ops"]},
        {"metric": "spend_usd", "org_id": "acme", "subject_type": "org", "subject_id": "acme",
         "limit": Decimal("0.1"), "warn_at": "50%", "notify": ["ops", "finance"]},
    ],
}  # fmt: skip


def snapshot(meter: Meter) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Everything the catalog holds about metrics and thresholds, as JSON documents."""
    metrics = [m.to_json_dict() for m in meter.list_metrics(all_orgs=True)]
    thresholds = [t.to_json_dict() for t in meter.list_thresholds()]
    return metrics, thresholds


def test_apply_creates_then_a_second_apply_changes_nothing(meter: Meter) -> None:
    """The first apply creates every declared item with its fields; the second finds the
    catalog matching and changes nothing (not even updated_at)."""
    first = meter.apply(DOC)
    assert first.counts() == {"create": 4, "update": 0, "delete": 0, "unchanged": 0}
    calls = meter.get_metric("api_calls")
    assert (calls.aggregation_type, calls.unit, calls.precision) == ("COUNT", "calls", 0)
    spend = meter.get_metric("spend_usd", "acme")
    assert (spend.precision, spend.rounding) == (2, "HALF_UP")
    block, limit = meter.list_thresholds()
    assert (block.action, block.subject_id, block.notify_emails) == (
        "BLOCK",
        "*",
        ["ops@example.com"],
    )
    assert block.notify_webhook == "https://hooks.example.com/t?x=1"
    assert (limit.org_id, limit.subject_id) == ("acme", "acme")
    assert limit.notify_emails == ["ops@example.com", "cfo@example.com"]
    before = snapshot(meter)
    second = meter.apply(DOC)
    assert not second.changed
    assert second.counts() == {"create": 0, "update": 0, "delete": 0, "unchanged": 4}
    assert snapshot(meter) == before


def test_limits_are_exact(meter: Meter) -> None:
    """Limits from YAML keep their digits through the catalog: compared with decimal, and
    digit for digit (0.1 stays 0.1; a 50 % warn level of 0.1 is exactly 0.05)."""
    desired = parse(
        "metrics: [{key: m, precision: 12}]\nthresholds:\n"
        "  - {metric: m, subject_type: org, limit: 0.1, warn_at: 50%}\n"
        "  - {metric: m, subject_type: org, limit: 123456789012.000000000001, action: block}\n",
        "yaml",
    )
    meter.apply(desired)
    small, large = meter.list_thresholds()
    assert small.threshold == Decimal("0.1") and str(small.threshold) == "0.1"
    assert small.warn_threshold == Decimal("0.1") * Decimal(50) / Decimal(100)
    assert str(large.threshold) == "123456789012.000000000001"
    assert not meter.plan(desired).changed


def test_plan_changes_nothing_and_shows_each_field(meter: Meter) -> None:
    """plan() (what --dry-run prints) writes nothing; an update names each changed field
    with its stored and declared values, decimals digit for digit."""
    meter.apply(DOC)
    before = snapshot(meter)
    changed = {**DOC, "metrics": [{**DOC["metrics"][0], "unit": "requests",
                                   "description": "API requests"}, DOC["metrics"][1]],
               "thresholds": [{**DOC["thresholds"][0], "limit": Decimal("20000.50")},
                              DOC["thresholds"][1]]}  # fmt: skip
    plan = meter.plan(changed)
    assert snapshot(meter) == before
    updates = [s for s in plan.steps if s.action == "update"]
    assert [(s.kind, [(c.field, c.before, c.after) for c in s.changes]) for s in updates] == [
        ("metric", [("description", "", "API requests"), ("unit", "calls", "requests")]),
        ("threshold", [("limit", Decimal("10000"), Decimal("20000.50")),
                       ("warn_at", Decimal("8000"), Decimal("16000.40"))]),
    ]  # fmt: skip
    meter.apply(plan)
    assert meter.get_metric("api_calls").unit == "requests"
    assert str(meter.list_thresholds("api_calls")[0].threshold) == "20000.50"
    assert not meter.plan(changed).changed


def test_prune_deletes_only_what_the_file_does_not_declare(meter: Meter) -> None:
    """Without prune, undeclared items are kept (and counted); with it they are deleted, a
    metric with recorded usage says so, and everything declared stays untouched."""
    meter.apply(DOC)
    meter.define_metric("legacy", aggregation_type="SUM")
    meter.define_metric("unused", org_id="acme")
    meter.record("legacy", "org", "o1", 5, timestamp="2026-01-05T10:00:00Z")
    extra = meter.create_threshold("api_calls", "user", 5)
    meter.create_threshold("legacy", "org", 7)
    kept = meter.apply(DOC)
    assert not kept.changed and kept.kept == (2, 2)
    declared = snapshot(meter)
    plan = meter.plan(DOC, prune=True)
    deletes = [(s.kind, s.metric_key, s.org_id, s.note) for s in plan.steps if s.action == "delete"]
    assert deletes[:2] == [("threshold", "api_calls", None, ""), ("threshold", "legacy", None, "")]
    assert deletes[2][:3] == ("metric", "legacy", None) and "recorded usage" in deletes[2][3]
    assert deletes[3] == ("metric", "unused", "acme", "")
    meter.apply(plan)
    assert {(m.key, m.org_id) for m in meter.list_metrics(all_orgs=True)} == {
        ("api_calls", None), ("spend_usd", "acme")}  # fmt: skip
    assert extra.id not in {t.id for t in meter.list_thresholds()}
    assert len(meter.list_thresholds()) == 2
    metrics, thresholds = snapshot(meter)
    assert [m for m in declared[0] if m["key"] in ("api_calls", "spend_usd")] == metrics
    assert [t for t in declared[1] if t["id"] in {t["id"] for t in thresholds}] == thresholds
    with pytest.raises(NotFoundError):
        meter.get_metric("legacy")
    meter.define_metric("legacy", aggregation_type="SUM")  # records stayed in the store
    assert [r.quantity for r in meter.get_usage("legacy")] == [Decimal("5.000000")]


def test_a_declaration_that_cannot_apply_whole_changes_nothing(meter: Meter) -> None:
    """A precision change, a threshold on an unknown metric: every problem is named, and
    not one of the valid steps before them is applied."""
    meter.apply(DOC)
    before = snapshot(meter)
    bad = {
        "metrics": [{**DOC["metrics"][0], "precision": 3, "unit": "new"},
                    {"key": "brand_new"}, DOC["metrics"][1]],
        "thresholds": [*DOC["thresholds"],
                       {"metric": "missing", "subject_type": "org", "limit": 1},
                       {"metric": "spend_usd", "subject_type": "org", "limit": 1}],
        "channels": DOC["channels"],
    }  # fmt: skip
    with pytest.raises(DeclarationError) as caught:
        meter.apply(bad)
    assert [p for p, _ in caught.value.problems] == [
        "metrics[0].precision", "thresholds[2].metric", "thresholds[3].metric"]  # fmt: skip
    assert "cannot change from 0 to 3" in str(caught.value)
    assert "no metric 'spend_usd'" in str(caught.value)  # spend_usd is acme's, not global
    assert snapshot(meter) == before


def test_prune_cannot_leave_a_threshold_without_its_metric(meter: Meter) -> None:
    """A declared threshold on a stored metric the file does not declare: fine when kept,
    an error (nothing changed) when pruning would delete its metric."""
    meter.define_metric("stored_only")
    doc = {"thresholds": [{"metric": "stored_only", "subject_type": "org", "limit": 3}]}
    assert meter.plan(doc).counts()["create"] == 1
    with pytest.raises(
        DeclarationError, match=r"thresholds\[0\]\.metric: no metric 'stored_only' \(pruned"
    ):
        meter.plan(doc, prune=True)


def test_a_threshold_with_an_id_changes_in_place(meter: Meter) -> None:
    """With an id, a threshold's action and subject change by update (same id); without one,
    a new action is another threshold."""
    doc = {
        "metrics": [{"key": "m"}],
        "thresholds": [{"id": "m-limit", "metric": "m", "subject_type": "org", "limit": 5}],
    }
    meter.apply(doc)
    doc["thresholds"][0].update(action="block", subject_id="acme")
    plan = meter.apply(doc)
    assert [(s.action, [c.field for c in s.changes]) for s in plan.pending] == [
        ("update", ["subject_id", "action"])]  # fmt: skip
    (item,) = meter.list_thresholds()
    assert (item.id, item.action, item.subject_id) == ("m-limit", "BLOCK", "acme")
    doc["thresholds"][0]["metric"] = "other"
    doc["metrics"].append({"key": "other"})
    with pytest.raises(DeclarationError, match="its metric cannot change"):
        meter.plan(doc)


HOSTILE = ["a,b=c \"q\" 's'", "back\\slash", "ünï 😀 \u202ertl", "x" * 256, "*", " sp "]


def test_hostile_names_are_data(meter: Meter) -> None:
    """Keys, org ids and subjects with separators, quotes, backslashes and unicode are stored
    as written, found again by the next plan (no change), and pruned precisely."""
    import yaml

    doc = {
        "metrics": [{"key": n, "org_id": n, "description": f"{n}\nline"} for n in HOSTILE],
        "thresholds": [{"metric": n, "org_id": n, "subject_type": n, "subject_id": n,
                        "limit": "1.25"} for n in HOSTILE],
    }  # fmt: skip
    desired = parse(yaml.safe_dump(doc, allow_unicode=True), "yaml")
    meter.apply(desired)
    stored = {(m.key, m.org_id, m.description) for m in meter.list_metrics(all_orgs=True)}
    assert stored == {(n, n, f"{n}\nline") for n in HOSTILE}
    stored_t = {(t.metric_key, t.org_id, t.subject_type, t.subject_id, t.threshold)
                for t in meter.list_thresholds()}  # fmt: skip
    assert stored_t == {(n, n, n, n, Decimal("1.25")) for n in HOSTILE}
    assert not meter.plan(desired, prune=True).changed
    fewer = {"metrics": doc["metrics"][1:], "thresholds": doc["thresholds"][1:]}
    pruned = meter.apply(fewer, prune=True)
    assert [(s.kind, s.metric_key) for s in pruned.pending] == [
        ("threshold", HOSTILE[0]), ("metric", HOSTILE[0])]  # fmt: skip


def test_define_metric_exist_ok_is_safe_to_repeat(meter: Meter) -> None:
    """define_metric(exist_ok=True) returns the stored metric when it is the same and names
    the differing fields when not; without exist_ok a second define is still a conflict."""
    first = meter.define_metric("gb", aggregation_type="max", unit="GB", exist_ok=True)
    again = meter.define_metric("gb", aggregation_type="MAX", unit="GB", exist_ok=True)
    assert again == first
    with pytest.raises(
        ConflictError, match=r"unit 'GB' \(asked: 'GiB'\), precision '6' \(asked: '2'\)"
    ):
        meter.define_metric("gb", aggregation_type="max", unit="GiB", precision=2, exist_ok=True)
    with pytest.raises(ConflictError):
        meter.define_metric("gb", aggregation_type="max", unit="GB")
    assert meter.list_metrics() == [first]


def test_create_threshold_exist_ok_is_safe_to_repeat(meter: Meter) -> None:
    """create_threshold(exist_ok=True) returns the threshold of the same metric, subject,
    period and action if its fields match; a differing limit is a conflict naming it."""
    meter.define_metric("calls", aggregation_type="count")
    first = meter.create_threshold("calls", "org", "100.0", action="block", exist_ok=True)
    assert meter.create_threshold("calls", "org", "100.0", action="BLOCK", exist_ok=True) == first
    other = meter.create_threshold("calls", "org", 100, action="alert", exist_ok=True)
    assert other.id != first.id
    with pytest.raises(ConflictError, match=r"limit '100.0' \(asked: '150'\)"):
        meter.create_threshold("calls", "org", 150, action="block", exist_ok=True)
    assert len(meter.list_thresholds()) == 2


def test_the_python_entry_point_takes_a_desired_state(meter: Meter) -> None:
    """A service can declare its metrics at start-up: apply(DesiredState) or a mapping,
    repeated at every start, creates them once."""
    desired = DesiredState.from_document({"metrics": [{"key": "api_calls"}]}, "service")
    for _ in range(3):
        meter.apply(desired)
    assert [m.key for m in meter.list_metrics()] == ["api_calls"]


PROPERTIES: dict[str, Any] = {
    "metrics": [
        {"key": "tokens", "dimensions": ["model", {"name": "region", "values": ["eu", "us"]}]},
        {"key": "mau", "aggregation_type": "unique_count", "unique_property": "user_id"},
        {"key": "storage_gb", "aggregation_type": "time_weighted_sum", "time_unit": "day"},
    ]
}


def test_plans_show_dimensions_unique_property_and_time_unit(meter: Meter) -> None:
    """A plan shows the declared properties; applied, the metrics hold them; a bound or a
    closed set may change, dimension names, the unique property, the time unit and a
    record-level type may not, and the file that asks changes nothing."""
    plan = meter.plan(PROPERTIES)
    shown = {s.metric_key: {c.field: c.after for c in s.changes} for s in plan.steps}
    assert shown["tokens"]["dimensions"] == "model (max 100), region (eu, us)"
    assert "time_unit" not in shown["tokens"] and "unique_property" not in shown["tokens"]
    assert shown["mau"]["unique_property"] == "user_id"
    assert shown["storage_gb"]["time_unit"] == "DAY"
    meter.apply(PROPERTIES)
    assert meter.get_metric("tokens").dimension_names == ("model", "region")
    assert not meter.plan(PROPERTIES).changed
    wider = {"metrics": [{**PROPERTIES["metrics"][0], "dimensions": [
        {"name": "model", "max_values": 500}, {"name": "region", "values": ["eu", "us", "ap"]}]},
        *PROPERTIES["metrics"][1:]]}  # fmt: skip
    [step] = meter.plan(wider).pending
    assert [(c.field, c.before, c.after) for c in step.changes] == [(
        "dimensions", "model (max 100), region (eu, us)",
        "model (max 500), region (eu, us, ap)")]  # fmt: skip
    meter.apply(wider)
    assert meter.get_metric("tokens").dimensions[0].max_values == 500
    before = snapshot(meter)
    fixed = {"metrics": [
        {"key": "tokens", "dimensions": ["model", "zone"]},
        {"key": "mau", "aggregation_type": "unique_count", "unique_property": "account"},
        {"key": "storage_gb", "aggregation_type": "sum", "time_unit": "hour"},
    ]}  # fmt: skip
    with pytest.raises(DeclarationError) as caught:
        meter.apply(fixed)
    assert [place for place, _ in caught.value.problems] == [
        "metrics[0].dimensions", "metrics[1].unique_property", "metrics[2].aggregation_type",
        "metrics[2].time_unit"]  # fmt: skip
    assert "dimension names cannot change" in str(caught.value)
    assert snapshot(meter) == before
