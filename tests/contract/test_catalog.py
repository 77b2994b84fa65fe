"""The Catalog contract: metric definitions and thresholds, as every store adapter keeps them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from tests.contract.stores import Store
from tsmeter.domain import AggregationType, MetricDefinition, ThresholdAction, UsageThreshold
from tsmeter.errors import ConflictError

NOW = datetime(2026, 1, 5, 12, 30, 15, 123456, tzinfo=UTC)


def metric(key: str, org: str | None = None, **fields: object) -> MetricDefinition:
    """A metric definition with timestamps set."""
    return MetricDefinition(key=key, org_id=org, created_at=NOW, updated_at=NOW, **fields)


def test_metric_crud(store: Store) -> None:
    """A metric can be added, found, listed, replaced and removed."""
    m = metric("api_calls", name="API calls", unit="calls", aggregation_type="COUNT")
    store.add_metric(m)
    assert store.find_metric("api_calls", None) == m
    assert store.list_metrics() == [m]
    changed = m.model_copy(update={"unit": "requests", "aggregation_type": AggregationType.SUM})
    store.replace_metric(changed)
    assert store.find_metric("api_calls", None) == changed
    store.remove_metric(m.id)
    assert store.find_metric("api_calls", None) is None
    assert store.list_metrics() == []


def test_duplicate_key_in_one_scope_conflicts(store: Store) -> None:
    """A second metric with a key already used in the same org scope is a ConflictError."""
    store.add_metric(metric("api_calls"))
    store.add_metric(metric("api_calls", "acme"))
    with pytest.raises(ConflictError, match="api_calls"):
        store.add_metric(metric("api_calls"))
    with pytest.raises(ConflictError, match="acme"):
        store.add_metric(metric("api_calls", "acme"))
    assert len(store.list_metrics()) == 2


def test_same_key_in_other_scopes_coexists(store: Store) -> None:
    """A global metric and org-scoped metrics may share a key; find looks in one exact scope."""
    glob = metric("api_calls", aggregation_type="COUNT")
    acme = metric("api_calls", "acme", aggregation_type="SUM")
    beta = metric("api_calls", "beta", aggregation_type="MAX")
    for m in (beta, glob, acme):
        store.add_metric(m)
    assert store.find_metric("api_calls", None) == glob
    assert store.find_metric("api_calls", "acme") == acme
    assert store.find_metric("api_calls", "beta") == beta
    assert store.find_metric("api_calls", "zeta") is None  # no fallback at the port
    assert store.list_metrics() == [glob, acme, beta]  # ordered by org (global first), then key
    store.remove_metric(acme.id)
    assert store.find_metric("api_calls", "acme") is None
    assert store.find_metric("api_calls", None) == glob


def test_list_metrics_orders_by_org_then_key(store: Store) -> None:
    """list_metrics returns global metrics first, then each org's, each sorted by key."""
    for key, org in [("b", None), ("a", "o2"), ("c", "o1"), ("a", None), ("a", "o1")]:
        store.add_metric(metric(key, org))
    assert [(m.org_id, m.key) for m in store.list_metrics()] == [
        (None, "a"),
        (None, "b"),
        ("o1", "a"),
        ("o1", "c"),
        ("o2", "a"),
    ]


def test_removed_key_can_be_defined_again(store: Store) -> None:
    """Removing a metric frees its key in its scope."""
    first = metric("api_calls")
    store.add_metric(first)
    store.remove_metric(first.id)
    second = metric("api_calls", unit="calls")
    store.add_metric(second)
    assert store.find_metric("api_calls", None) == second


def test_catalog_hostile_strings_round_trip(store: Store) -> None:
    """Keys, org ids and texts with commas, quotes, '=', backslashes and emoji come back exactly."""
    texts = ['a,b c="d"', "k=v\\", "🚀 ünï 日本", "x" * 256]
    for t in texts:
        store.add_metric(metric(t, t, name=t, description=t, unit=t))
    for t in texts:
        found = store.find_metric(t, t)
        assert found is not None and (found.key, found.org_id, found.name) == (t, t, t)


def threshold(**fields: object) -> UsageThreshold:
    """A threshold on api_calls per org."""
    base: dict[str, object] = {
        "metric_key": "api_calls",
        "subject_type": "org",
        "threshold": 100,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return UsageThreshold.model_validate({**base, **fields})


def test_threshold_crud(store: Store) -> None:
    """Thresholds can be added, read, listed oldest first, replaced and removed."""
    first = threshold(
        subject_id="o1",
        action="BLOCK",
        notify_emails=["ops@example.com"],
        notify_webhook="https://hooks.example.com/x?a=1&b=2",
    )
    second = threshold(threshold=5, warn_threshold=4.5)
    store.add_threshold(first)
    store.add_threshold(second)
    assert store.get_threshold(first.id) == first
    assert store.list_thresholds() == [first, second]
    changed = first.model_copy(update={"threshold": 200.0, "action": ThresholdAction.WARN})
    store.replace_threshold(changed)
    assert store.get_threshold(first.id) == changed
    assert store.list_thresholds() == [changed, second]
    assert store.remove_threshold(first.id) is True
    assert store.remove_threshold(first.id) is False
    assert store.get_threshold(first.id) is None
    assert store.list_thresholds() == [second]


def test_catalog_is_shared_between_store_objects(
    store: Store, open_same: Callable[[], Store]
) -> None:
    """Metrics and thresholds written through one store object are seen through another, and a
    key taken through one conflicts through the other."""
    other = open_same()
    m = metric("api_calls")
    store.add_metric(m)
    t = threshold()
    store.add_threshold(t)
    assert other.find_metric("api_calls", None) == m
    assert other.get_threshold(t.id) == t
    with pytest.raises(ConflictError):
        other.add_metric(metric("api_calls"))
