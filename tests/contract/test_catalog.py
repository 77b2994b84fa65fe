"""The Catalog contract: metric definitions, thresholds and alerts, as every store adapter keeps
them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.contract.stores import Store, open_deliveries
from tsmeter.domain import (
    AggregationType,
    AlertStatus,
    MetricDefinition,
    ThresholdAction,
    UsageAlert,
    UsageThreshold,
)
from tsmeter.errors import ConflictError
from tsmeter.ports import AlertOpening, AlertResolution, DeliveryRow

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
    changed = first.model_copy(update={"threshold": Decimal(200), "action": ThresholdAction.WARN})
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


# -- alerts ---------------------------------------------------------------------------------
WINDOW = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
NEXT_WINDOW = 1_769_904_000_000_000_000  # 2026-02-01T00:00:00Z in ns


def alert(
    level: str = "exceeded", subject: str = "acme", minute: int = 0, **fields: object
) -> UsageAlert:
    """An alert of threshold thr-1 on ``subject``, created ``minute`` minutes after NOW."""
    return UsageAlert.model_validate({
        "threshold_id": "thr-1", "metric_key": "api_calls", "subject_type": "org",
        "subject_id": subject, "level": level, "period_start": None, "period_end": None,
        "actual_value": 110, "threshold_value": 100, "percentage": 110.0,
        "created_at": NOW + timedelta(minutes=minute), **fields,
    })  # fmt: skip


def planned(a: UsageAlert, event: str = "threshold.exceeded", *targets: str) -> list[DeliveryRow]:
    """One webhook delivery per target for ``a``'s ``event``."""
    return [
        DeliveryRow(id=f"{a.id}/{event}/{t}", alert_id=a.id, event=event, channel="webhook",
                    target=t, metric_key=a.metric_key, subject_type=a.subject_type,
                    subject_id=a.subject_id, payload="{}")
        for t in targets
    ]  # fmt: skip


@pytest.fixture
def queued(adapter: str, location: str) -> Iterator[Callable[[], list[tuple[str, str, str]]]]:
    """What the catalog's delivery queue holds: (alert id, event, target) in queue order."""
    queue, close = open_deliveries(adapter, location)
    yield lambda: [(d.alert_id, d.event, d.target) for d in queue.entries()]
    close()


def test_one_open_alert_per_threshold_subject_window_and_level(store: Store) -> None:
    """A second alert for an open key is refused; another level, subject or window is not."""
    first = alert()
    assert store.open_alert(first, WINDOW) is True
    assert store.open_alert(alert(minute=1), WINDOW) is False
    assert store.open_alert(alert("approaching", minute=2), WINDOW) is True
    assert store.open_alert(alert(subject="beta", minute=3), WINDOW) is True
    assert store.open_alert(alert(minute=4), NEXT_WINDOW) is True
    assert store.get_alert(first.id) == first
    assert len(store.list_alerts()) == 4
    assert [a.subject_id for a in store.open_alerts("thr-1", WINDOW)] == ["acme", "acme", "beta"]
    assert [a.level for a in store.open_alerts("thr-1", WINDOW)][:2] == ["exceeded", "approaching"]
    assert len(store.open_alerts("thr-1", NEXT_WINDOW)) == 1
    assert store.open_alerts("thr-2", WINDOW) == []


def test_resolved_by_hand_blocks_the_key_resolved_by_the_monitor_does_not(store: Store) -> None:
    """An acknowledged alert still holds its key; one resolved by hand keeps it closed for the
    window; one the monitor resolved lets the level fire again."""
    by_hand, by_monitor = alert(), alert("approaching")
    store.open_alert(by_hand, WINDOW)
    store.open_alert(by_monitor, WINDOW)
    acked = store.set_alert_status(by_hand.id, AlertStatus.ACKNOWLEDGED, NOW)
    assert acked is not None and (acked.status, acked.acknowledged_at) == ("ACKNOWLEDGED", NOW)
    assert store.open_alert(alert(minute=1), WINDOW) is False
    later = NOW + timedelta(hours=1)
    resolved = store.set_alert_status(by_hand.id, AlertStatus.RESOLVED, later)
    assert resolved is not None and resolved.resolved_at == later
    assert store.get_alert(by_hand.id) == resolved
    store.set_alert_status(by_monitor.id, AlertStatus.RESOLVED, later, automatic=True)
    assert store.open_alerts("thr-1", WINDOW) == []
    assert store.open_alert(alert(minute=2), WINDOW) is False
    assert store.open_alert(alert("approaching", minute=3), WINDOW) is True
    assert store.open_alert(alert(minute=4), NEXT_WINDOW) is True
    assert store.set_alert_status("no-such-alert", AlertStatus.RESOLVED, later) is None


def test_list_alerts_newest_first_and_by_status(store: Store) -> None:
    """list_alerts orders by creation time, newest first (ties by id, descending), and keeps
    only one status when asked."""
    made = [alert(subject=f"s{i}", minute=m, id=f"id-{i}") for i, m in enumerate([5, 1, 5, 3])]
    for a in made:
        store.open_alert(a, WINDOW)
    store.set_alert_status("id-3", AlertStatus.ACKNOWLEDGED, NOW)
    assert [a.id for a in store.list_alerts()] == ["id-2", "id-0", "id-3", "id-1"]
    assert [a.id for a in store.list_alerts(AlertStatus.PENDING)] == ["id-2", "id-0", "id-1"]
    assert [a.id for a in store.list_alerts(AlertStatus.ACKNOWLEDGED)] == ["id-3"]
    assert store.list_alerts(AlertStatus.RESOLVED) == []


def test_deliveries_are_queued_with_the_alert_change_only(
    store: Store, queued: Callable[[], list[tuple[str, str, str]]]
) -> None:
    """An alert's deliveries are queued when it is stored, not when it is refused; a
    resolution's with the resolution, not for an alert that does not exist; one queued
    already stays as it is."""
    first, refused = alert(), alert(minute=1)
    assert store.open_alert(first, WINDOW, planned(first, "threshold.exceeded", "h1", "h2"))
    assert not store.open_alert(refused, WINDOW, planned(refused, "threshold.exceeded", "h1"))
    assert (
        store.set_alert_status(
            "nope",
            AlertStatus.RESOLVED,
            NOW,
            deliveries=planned(refused, "threshold.resolved", "h1"),
        )
        is None
    )
    store.set_alert_status(
        first.id,
        AlertStatus.RESOLVED,
        NOW,
        automatic=True,
        deliveries=planned(first, "threshold.resolved", "h1"),
    )
    store.set_alert_status(first.id, AlertStatus.RESOLVED, NOW, automatic=True,
                           deliveries=planned(first, "threshold.resolved", "h1"))  # fmt: skip
    assert queued() == [
        (first.id, "threshold.exceeded", "h1"),
        (first.id, "threshold.exceeded", "h2"),
        (first.id, "threshold.resolved", "h1"),
    ]


def test_alert_keys_with_hostile_strings(store: Store) -> None:
    """Subjects with quotes, commas, backslashes and emoji are data: each its own key."""
    subjects = ['a,b c="d"', "k=v\\", "🚀 ünï 日本", "x'); DELETE FROM alerts; --", "%s%(a)s"]
    for i, s in enumerate(subjects):
        assert store.open_alert(alert(subject=s, minute=i), WINDOW) is True
        assert store.open_alert(alert(subject=s, minute=i), WINDOW) is False
    assert sorted(a.subject_id for a in store.open_alerts("thr-1", WINDOW)) == sorted(subjects)


def test_open_alert_batch_stores_each_free_key_once(
    store: Store, queued: Callable[[], list[tuple[str, str, str]]]
) -> None:
    """A batch stores the alerts whose key is free, in order: not a key with an open alert or
    one resolved by hand, nor the second of two alerts with one key in the batch; another
    window or level is free. Deliveries are queued only for the alerts stored."""
    held, by_hand = alert(subject="held"), alert(subject="by-hand")
    store.open_alert(held, WINDOW)
    store.open_alert(by_hand, WINDOW)
    store.set_alert_status(by_hand.id, AlertStatus.RESOLVED, NOW)
    batch = [
        alert(subject="new-1", minute=1), alert(subject="held", minute=2),
        alert(subject="by-hand", minute=3), alert(subject="new-1", minute=4),
        alert("approaching", subject="held", minute=5), alert(subject="held", minute=6),
        alert(subject='a,b c="d" 🚀', minute=7),
    ]  # fmt: skip
    windows = [WINDOW, WINDOW, WINDOW, WINDOW, WINDOW, NEXT_WINDOW, WINDOW]
    openings = [AlertOpening(a, w, planned(a, "threshold.exceeded", "h1"))
                for a, w in zip(batch, windows, strict=True)]  # fmt: skip
    assert store.open_alert_batch(openings) == [True, False, False, False, True, True, True]
    assert store.open_alert_batch(openings) == [False] * 7  # the same batch again
    assert store.open_alert_batch([]) == []
    assert {a.id for a in store.open_alerts("thr-1", WINDOW)} == {
        held.id,
        batch[0].id,
        batch[4].id,
        batch[6].id,
    }
    assert [a.id for a in store.open_alerts("thr-1", NEXT_WINDOW)] == [batch[5].id]
    assert store.get_alert(batch[6].id) == batch[6]
    assert queued() == [(batch[i].id, "threshold.exceeded", "h1") for i in (0, 4, 5, 6)]


def test_open_alert_batch_after_automatic_resolution(store: Store) -> None:
    """A level the monitor resolved may open again through a batch; an acknowledged alert
    still holds its key."""
    first, acked = alert(), alert(subject="acked")
    store.open_alert_batch([AlertOpening(first, WINDOW), AlertOpening(acked, WINDOW)])
    store.set_alert_status(acked.id, AlertStatus.ACKNOWLEDGED, NOW)
    store.set_alert_status(first.id, AlertStatus.RESOLVED, NOW, automatic=True)
    again = [AlertOpening(alert(minute=1), WINDOW), AlertOpening(alert("exceeded", "acked"),
                                                                   WINDOW)]  # fmt: skip
    assert store.open_alert_batch(again) == [True, False]


def test_resolve_alert_batch_resolves_open_alerts_once(
    store: Store, queued: Callable[[], list[tuple[str, str, str]]]
) -> None:
    """A batch resolves the alerts still open (as the monitor: the level may fire again) and
    queues their deliveries; an unknown alert, one resolved already and the second mention of
    one in the batch give None and queue nothing."""
    a, b, gone = alert(subject="a"), alert(subject="b"), alert(subject="gone")
    for x in (a, b, gone):
        store.open_alert(x, WINDOW)
    store.set_alert_status(gone.id, AlertStatus.RESOLVED, NOW)
    later = NOW + timedelta(hours=2)
    resolutions = [
        AlertResolution(x, later, planned(y, "threshold.resolved", "h1"))
        for x, y in [(a.id, a), ("nope", a), (gone.id, gone), (b.id, b), (a.id, a)]
    ]
    results = store.resolve_alert_batch(resolutions)
    assert [r is not None for r in results] == [True, False, False, True, False]
    assert results[0] is not None and results[0].status == AlertStatus.RESOLVED
    assert results[0].resolved_at == later and store.get_alert(a.id) == results[0]
    assert store.open_alerts("thr-1", WINDOW) == []
    assert store.resolve_alert_batch(resolutions[:1]) == [None]
    assert store.resolve_alert_batch([]) == []
    assert queued() == [(a.id, "threshold.resolved", "h1"), (b.id, "threshold.resolved", "h1")]
    assert store.open_alert(alert(subject="a", minute=1), WINDOW) is True
    assert store.open_alert(alert(subject="gone", minute=1), WINDOW) is False
