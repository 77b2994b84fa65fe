"""The DeliveryQueue contract: what the notifier relies on, on the SQLite delivery log and on
the fleet's PostgreSQL queue alike."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.delivery_queues import QUEUES, QueuePlace, open_place
from tests.hostile import NASTY_NAMES
from tsmeter.domain.deliveries import Channel, Claimed, DeliveryStatus
from tsmeter.errors import StorageUnavailableError, ValidationError
from tsmeter.ports import DeliveryQueue, DeliveryRow

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
SECOND = 1_000_000_000
HOUR = 3600 * SECOND
EMAIL, WEBHOOK = Channel.EMAIL, Channel.WEBHOOK


@pytest.fixture(params=QUEUES)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueuePlace]:
    """The backing store of the queue under test."""
    yield from open_place(request, tmp_path)


@pytest.fixture
def queue(place: QueuePlace) -> DeliveryQueue:
    """The queue under test."""
    return place.queue()


def row(n: int, channel: Channel = WEBHOOK, **fields: object) -> DeliveryRow:
    """Delivery ``n`` of alert ``a<n>``."""
    values: dict[str, object] = {
        "id": f"d{n}", "alert_id": f"a{n}", "event": "threshold.exceeded", "channel": channel,
        "target": f"https://hooks.test/{n}" if channel is WEBHOOK else f"ops{n}@x.test",
        "metric_key": "api_calls", "subject_type": "org", "subject_id": "acme",
        "payload": f'{{"n": {n}}}',
    }  # fmt: skip
    values.update(fields)
    return DeliveryRow(**values)  # type: ignore[arg-type]


def claim_all(queue: DeliveryQueue, now: int, lease: int = HOUR, limit: int = 100) -> list[str]:
    """The ids claimed by one call on both channels."""
    return [c.id for c in queue.claim_due(now, time.time_ns(), lease, limit, [EMAIL, WEBHOOK])]


def test_enqueue_adds_each_alert_event_channel_target_once(queue: DeliveryQueue) -> None:
    """Only new (alert, event, channel, target)s are added, whatever their id; a second call,
    or the same delivery under another id, adds nothing and changes nothing."""
    assert queue.enqueue([row(1), row(2), row(3, EMAIL)], T0) == 3
    assert queue.enqueue([row(1), row(2)], T0 + SECOND) == 0
    assert queue.enqueue([row(1, id="other", payload="changed")], T0 + SECOND) == 0
    assert queue.enqueue([row(4), row(1)], T0 + SECOND) == 1
    assert queue.enqueue([], T0) == 0
    items = queue.entries()
    assert [d.id for d in items] == ["d1", "d2", "d3", "d4"]
    assert [(d.status, d.attempts, d.last_error) for d in items] == [("pending", 0, None)] * 4
    assert items[0].created_at == items[0].updated_at == items[0].next_attempt_at
    assert items[0].created_at.timestamp() == T0 / SECOND


def test_a_delivery_with_an_error_is_failed_at_once(queue: DeliveryQueue) -> None:
    """An enqueued delivery carrying an error is recorded failed, unattempted, never claimed."""
    queue.enqueue([row(1, error="refused target: no"), row(2)], T0)
    failed = queue.entries("failed")
    assert [(d.id, d.attempts, d.last_error) for d in failed] == [("d1", 0, "refused target: no")]
    assert failed[0].next_attempt_at is None
    assert claim_all(queue, T0 + HOUR) == ["d2"]


def test_entries_filter_order_and_limit(queue: DeliveryQueue) -> None:
    """Entries come oldest first (ties in the order queued), filtered by any case of a status,
    at most ``limit``; an unknown status is a ValidationError naming ``status``."""
    queue.enqueue([row(3), row(1)], T0 + SECOND)
    queue.enqueue([row(2)], T0)
    assert [d.id for d in queue.entries()] == ["d2", "d3", "d1"]
    assert [d.id for d in queue.entries(limit=2)] == ["d2", "d3"]
    queue.finish("d3", DeliveryStatus.DELIVERED, T0 + HOUR)
    assert [d.id for d in queue.entries("DELIVERED")] == ["d3"]
    assert [d.id for d in queue.entries(DeliveryStatus.PENDING)] == ["d2", "d1"]
    with pytest.raises(ValidationError, match="status"):
        queue.entries("sent")


def test_claim_takes_due_ones_on_the_given_channels_oldest_due_first(
    queue: DeliveryQueue,
) -> None:
    """Only pending deliveries due at ``now`` on the channels asked for are claimed, in the
    order they are due, at most ``limit``; a claimed one is not claimed again while its lease
    runs."""
    queue.enqueue([row(1), row(2), row(3, EMAIL), row(4)], T0)
    queue.finish("d1", DeliveryStatus.PENDING, T0, error="x", next_attempt_at=T0 + 3 * SECOND)
    queue.finish("d4", DeliveryStatus.PENDING, T0, error="x", next_attempt_at=T0 + 2 * SECOND)
    clock = time.time_ns()
    assert queue.claim_due(T0, clock, HOUR, 10, [EMAIL]) == [
        Claimed("d3", "threshold.exceeded", EMAIL, "ops3@x.test", '{"n": 3}', 0)
    ]
    assert [c.id for c in queue.claim_due(T0 + 5 * SECOND, clock, HOUR, 2, [WEBHOOK])] == [
        "d2",
        "d4",
    ]
    assert claim_all(queue, T0 + 5 * SECOND) == ["d1"]
    assert claim_all(queue, T0 + 5 * SECOND) == []
    assert queue.claim_due(T0, clock, HOUR, 10, []) == []


def test_a_lapsed_claim_can_be_taken_again(queue: DeliveryQueue) -> None:
    """A worker that claimed and died holds its deliveries only until its lease runs out."""
    queue.enqueue([row(1), row(2)], T0)
    lease = 300_000_000  # 0.3 s
    assert claim_all(queue, T0, lease=lease) == ["d1", "d2"]
    assert claim_all(queue, T0, lease=lease) == []
    time.sleep(0.45)
    assert claim_all(queue, T0, lease=HOUR) == ["d1", "d2"]


def test_finish_records_the_outcome_and_releases_the_claim(queue: DeliveryQueue) -> None:
    """A delivered one is stamped and never claimed again; a deferred one is due at its next
    attempt and claimable then; a failed one waits for a requeue. Attempts count up."""
    queue.enqueue([row(1), row(2), row(3)], T0)
    assert claim_all(queue, T0) == ["d1", "d2", "d3"]
    queue.finish("d1", DeliveryStatus.DELIVERED, T0 + SECOND)
    queue.finish("d2", DeliveryStatus.PENDING, T0 + SECOND, error="503", next_attempt_at=T0 + HOUR)
    queue.finish("d3", DeliveryStatus.FAILED, T0 + SECOND, error="404")
    d1, d2, d3 = queue.entries()
    assert (d1.status, d1.attempts, d1.next_attempt_at) == ("delivered", 1, None)
    assert d1.delivered_at is not None and d1.delivered_at.timestamp() == T0 / SECOND + 1
    assert (d2.status, d2.attempts, d2.last_error) == ("pending", 1, "503")
    assert d2.next_attempt_at is not None and d2.next_attempt_at.timestamp() == T0 / SECOND + 3600
    assert (d3.status, d3.attempts, d3.last_error, d3.delivered_at) == ("failed", 1, "404", None)
    assert claim_all(queue, T0 + HOUR - 1) == []
    assert claim_all(queue, T0 + HOUR) == ["d2"]


def test_count_and_next_due(queue: DeliveryQueue) -> None:
    """count_due counts pending deliveries due on one channel; next_due is the earliest time a
    pending one can be attempted (its due time, or the end of its claim if later)."""
    assert queue.next_due([EMAIL, WEBHOOK]) is None
    queue.enqueue([row(1, EMAIL), row(2, EMAIL), row(3)], T0)
    queue.finish("d2", DeliveryStatus.PENDING, T0, error="x", next_attempt_at=T0 + HOUR)
    assert (queue.count_due(T0, EMAIL), queue.count_due(T0 + HOUR, EMAIL)) == (1, 2)
    assert queue.count_due(T0, WEBHOOK) == 1
    assert queue.next_due([EMAIL]) == T0
    assert queue.next_due([]) is None
    before = time.time_ns()
    assert claim_all(queue, T0, lease=HOUR) == ["d1", "d3"]
    after = time.time_ns()
    due = queue.next_due([WEBHOOK])
    assert due is not None and before + HOUR - 1_000_000 <= due <= after + HOUR
    assert queue.next_due([EMAIL]) == T0 + HOUR  # d2's due time: d1 is claimed until later
    for delivery_id in ("d1", "d2", "d3"):
        queue.finish(delivery_id, DeliveryStatus.DELIVERED, T0)
    assert queue.next_due([EMAIL, WEBHOOK]) is None


def test_requeue_failed(queue: DeliveryQueue) -> None:
    """Failed deliveries (all, or the ids given) become pending, due at ``now``, with a fresh
    attempt count; other statuses are left alone."""
    queue.enqueue([row(1), row(2), row(3), row(4, error="refused")], T0)
    for delivery_id in ("d1", "d2"):
        queue.finish(delivery_id, DeliveryStatus.FAILED, T0, error="404")
    queue.finish("d3", DeliveryStatus.DELIVERED, T0)
    assert queue.requeue_failed(T0 + HOUR, ["d1", "d3", "nope", "d1"]) == 1
    assert queue.requeue_failed(T0 + HOUR, []) == 0
    d1 = queue.entries("pending")[0]
    assert (d1.id, d1.attempts) == ("d1", 0)
    assert d1.next_attempt_at is not None and d1.next_attempt_at.timestamp() == T0 / SECOND + 3600
    assert queue.requeue_failed(T0 + HOUR) == 2
    assert [d.id for d in queue.entries("pending")] == ["d1", "d2", "d4"]
    assert claim_all(queue, T0 + HOUR) == ["d1", "d2", "d4"]


def test_hostile_strings_are_data(queue: DeliveryQueue) -> None:
    """Ids, targets, subjects and payloads with quotes, commas, backslashes, '=' and emoji come
    back exactly, through enqueue, claim, finish and requeue."""
    names = [*NASTY_NAMES, "x'); DROP TABLE notify_deliveries; --", "a%sb%(x)s?"]
    rows = [
        row(i, id=name, alert_id=name, target=f"https://h.test/{i}?q={name}", subject_id=name,
            subject_type=name, metric_key=name, payload=name, event=name)
        for i, name in enumerate(names)
    ]  # fmt: skip
    assert queue.enqueue(rows, T0) == len(names)
    claimed = {c.id: c for c in queue.claim_due(T0, time.time_ns(), HOUR, 1000, [WEBHOOK])}
    assert set(claimed) == set(names)
    assert all(claimed[n].payload == n and claimed[n].event == n for n in names)
    for name in names:
        queue.finish(name, DeliveryStatus.FAILED, T0, error=name)
    assert queue.requeue_failed(T0, names[:3]) == 3
    by_id = {d.id: d for d in queue.entries()}
    for i, name in enumerate(names):
        d = by_id[name]
        assert (d.alert_id, d.subject_id, d.subject_type, d.metric_key, d.last_error) == (
            name, name, name, name, name,
        )  # fmt: skip
        assert d.target == f"https://h.test/{i}?q={name}"


def test_another_queue_object_on_the_same_place_shares_everything(place: QueuePlace) -> None:
    """What one queue object queued and claimed, another on the same place sees: the queue
    is the state store's, not the object's."""
    first, second = place.queue(), place.queue()
    first.enqueue([row(1), row(2)], T0)
    assert second.enqueue([row(1)], T0) == 0
    assert claim_all(first, T0, limit=1) == ["d1"]
    assert claim_all(second, T0) == ["d2"]
    first.finish("d2", DeliveryStatus.DELIVERED, T0)
    assert [d.status for d in second.entries()] == ["pending", "delivered"]


def test_a_closed_queue_says_so(queue: DeliveryQueue) -> None:
    """After close (idempotent), a call is a StorageUnavailableError, not a crash."""
    queue.close()
    queue.close()
    with pytest.raises(StorageUnavailableError, match="closed"):
        queue.entries()
