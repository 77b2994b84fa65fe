"""The blocking client against a real ``tsmeter serve``: every method round-trips with the
Meter's models and exact decimals, errors come back as tsmeter's own naming the field, and a
record whose answer was lost is sent again and counted once."""

from __future__ import annotations

import io
import json
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from tests.client.live import LiveServer, TcpProxy
from tests.hostile import NASTY_NAMES
from tsmeter.client import ApiError, Client, Retry
from tsmeter.domain import MetricDefinition, UsageRecord, UsageSummary, UsageThreshold
from tsmeter.errors import (
    ConflictError,
    NotFoundError,
    StorageUnavailableError,
    ValidationError,
)

JAN = "2026-01-05T10:00:00Z"
AT = "2026-01-20T00:00:00Z"


def test_metrics_round_trip(live: LiveServer, key: str) -> None:
    with Client(live.url) as client:
        made = client.define_metric(key, aggregation_type="SUM", unit="GB", precision=2)
        assert isinstance(made, MetricDefinition) and made.key == key
        assert client.get_metric(key) == made
        assert key in [m.key for m in client.list_metrics()]
        again = client.define_metric(
            key, aggregation_type="SUM", unit="GB", precision=2, exist_ok=True
        )
        assert again == made
        with pytest.raises(ConflictError, match="unit"):
            client.define_metric(key, aggregation_type="SUM", unit="TB", precision=2, exist_ok=True)
        with pytest.raises(ConflictError):
            client.define_metric(key, aggregation_type="SUM")
        changed = client.update_metric(key, unit="GiB")
        assert changed.unit == "GiB" and client.get_metric(key).unit == "GiB"
        client.record(key, "org", "o", "1.25", timestamp=JAN)
        assert client.delete_metric(key, purge=True) == 1
        with pytest.raises(NotFoundError):
            client.get_metric(key)


def test_records_and_reads_are_exact(live: LiveServer, key: str) -> None:
    with Client(live.url) as client:
        client.define_metric(key, aggregation_type="SUM", precision=2)
        first = client.record(
            key, "org", "o-1", "0.10", timestamp=JAN, id="r-1", metadata={"path": "/x"}
        )
        assert isinstance(first, UsageRecord)
        assert first.quantity == Decimal("0.10") and first.id == "r-1"
        assert first.metadata == {"path": "/x"}
        result = client.record_batch(
            [
                {
                    "metricKey": key,
                    "subjectType": "org",
                    "subjectId": "o-1",
                    "quantity": 0.2,
                    "timestamp": JAN,
                },
                UsageRecord(
                    metric_key=key,
                    subject_type="org",
                    subject_id="o-2",
                    quantity=Decimal("99999999999.99"),
                    timestamp=JAN,
                ),
                {
                    "metric_key": key,
                    "subject_type": "org",
                    "subject_id": "o-1",
                    "id": "r-1",
                    "quantity": "0.10",
                    "timestamp": JAN,
                },
            ]
        )
        assert (result.recorded, result.duplicates) == (2, 1)
        summary = client.get_usage_summary(key, "org", "o-1", "MONTHLY", at=AT)
        assert isinstance(summary, UsageSummary)
        assert summary.total_quantity == Decimal("0.30") and summary.record_count == 2
        big = client.get_usage_summary(key, "org", "o-2", "MONTHLY", at=AT)
        assert big.total_quantity == Decimal("99999999999.99")
        summaries = client.get_usage_summaries(
            key, "DAILY", start="2026-01-01T00:00:00Z", end="2026-02-01T00:00:00Z"
        )
        assert sorted((s.subject_id, s.total_quantity) for s in summaries) == [
            ("o-1", Decimal("0.30")),
            ("o-2", Decimal("99999999999.99")),
        ]
        records = client.get_usage(key, "org", "o-1", start="2026-01-01T00:00:00Z")
        assert sorted(r.quantity for r in records) == [Decimal("0.10"), Decimal("0.20")]
        assert len(client.get_usage(key, limit=None)) == 3
        out = io.StringIO()
        assert client.export_usage(out, key) == 3
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert sorted(line["quantity"] for line in lines) == ["0.10", "0.20", "99999999999.99"]
        out = io.StringIO()
        assert client.export_usage(out, key, fmt="csv", subject_id="o-1") == 2


def test_thresholds_and_alerts_round_trip(live: LiveServer, key: str) -> None:
    with Client(live.url) as client:
        client.define_metric(key, aggregation_type="COUNT")
        made = client.create_threshold(key, "org", 2, "o-1", action="ALERT")
        assert isinstance(made, UsageThreshold) and made.threshold == Decimal(2)
        assert (
            client.create_threshold(key, "org", "2", "o-1", action="ALERT", exist_ok=True) == made
        )
        assert [t.id for t in client.list_thresholds(key)] == [made.id]
        assert client.get_threshold(made.id) == made
        changed = client.update_threshold(made.id, threshold="3.5")
        assert changed.threshold == Decimal("3.5")
        client.record_batch([{"metricKey": key, "subjectType": "org", "subjectId": "o-1"}] * 4)
        live.tsmeter("alert", "evaluate")
        alerts = client.list_alerts(metric_key=key)
        assert {a.level for a in alerts} == {"exceeded"}
        alert = alerts[0]
        assert alert.actual_value == Decimal(4)
        assert client.acknowledge_alert(alert.id).status == "ACKNOWLEDGED"
        assert client.resolve_alert(alert.id).status == "RESOLVED"
        assert client.list_alerts("RESOLVED", metric_key=key)[0].id == alert.id
        client.delete_threshold(made.id)
        assert client.list_thresholds(key) == []
        with pytest.raises(NotFoundError):
            client.delete_threshold(made.id)


def test_errors_name_the_field(live: LiveServer, key: str) -> None:
    with Client(live.url) as client:
        client.define_metric(key, aggregation_type="SUM", precision=2)
        with pytest.raises(ValidationError) as single:
            client.record(key, "org", "o", "1.001", timestamp=JAN)
        assert single.value.field == "quantity"
        good = {
            "metricKey": key,
            "subjectType": "org",
            "subjectId": "o",
            "quantity": 1,
            "timestamp": JAN,
        }
        with pytest.raises(ValidationError) as batch:
            client.record_batch([good, good, {**good, "quantity": "abc"}])
        assert batch.value.field == "records[2].quantity"
        with pytest.raises(ValidationError) as naive:
            client.record(key, "org", "o", 1, timestamp="2026-01-05T10:00:00")
        assert naive.value.field == "timestamp"
        with pytest.raises(ValidationError) as unknown:
            client.record("no such metric", "org", "o")
        assert unknown.value.field == "metricKey"
        with pytest.raises(NotFoundError):
            client.get_usage_summary("no such metric", "org", "o")
        assert client.get_usage_summary(key, "org", "o", "MONTHLY", at=AT).record_count == 0


def test_a_dropped_answer_is_retried_with_the_same_id_and_counted_once(
    live: LiveServer, key: str
) -> None:
    proxy = TcpProxy(live.port)
    try:
        with Client(proxy.url, retry=Retry(backoff=0.01)) as client:
            client.define_metric(key, aggregation_type="SUM", precision=2)
            proxy.drop_next(b"POST /v1/usage/records ")
            stored = client.record(key, "org", "o", "1.10", timestamp=JAN)
            proxy.drop_next(b"POST /v1/usage/records/batch ", after_headers=True)
            batch = [
                {
                    "metricKey": key,
                    "subjectType": "org",
                    "subjectId": "o",
                    "quantity": "0.01",
                    "timestamp": JAN,
                }
            ] * 3
            result = client.record_batch(batch)
            assert proxy.dropped == 2  # the second one after its headers
            # the second try found every id stored by the first
            assert (result.recorded, result.duplicates) == (0, 3)
            summary = client.get_usage_summary(key, "org", "o", "MONTHLY", at=AT)
            assert summary.total_quantity == Decimal("1.13") and summary.record_count == 4
            assert [r.id for r in client.get_usage(key)].count(stored.id) == 1
    finally:
        proxy.close()


def test_a_dropped_answer_to_a_define_is_not_sent_again(live: LiveServer, key: str) -> None:
    """Defining a metric without exist_ok is not safe to repeat: the client says the server
    may have done it instead of trying again (and getting a 409). With exist_ok it is: the
    second try's 409 is compared with what is stored."""
    proxy = TcpProxy(live.port)
    try:
        with Client(proxy.url, retry=Retry(backoff=0.01)) as client:
            proxy.drop_next(b"POST /v1/metrics ")
            with pytest.raises(StorageUnavailableError, match="may have been done"):
                client.define_metric(key)
            assert client.get_metric(key).key == key
            proxy.drop_next(b"POST /v1/metrics ")
            made = client.define_metric(key + "-2", unit="GB", exist_ok=True)
            assert proxy.dropped == 2
            assert made == client.get_metric(key + "-2") and made.unit == "GB"
    finally:
        proxy.close()


def test_keys_and_scopes(tmp_path: Path) -> None:
    """Against a server that wants keys: none or a wrong one is ApiError 401, a key without
    the scope 403 (neither retried); exist_ok with a read key declares a metric that exists."""
    with LiveServer(tmp_path, auth=True) as server:
        admin, ingest = server.create_key("admin"), server.create_key("ingest", "read")
        with Client(server.url, admin) as client:
            client.define_metric("calls", aggregation_type="COUNT")
        for key, status in ((None, 401), ("tsm_wrong", 401)):
            with Client(server.url, key) as client, pytest.raises(ApiError) as caught:
                client.record("calls", "org", "o")
            assert caught.value.status == status
        with Client(server.url, ingest) as client:
            assert client.define_metric("calls", aggregation_type="COUNT", exist_ok=True).key
            with pytest.raises(ApiError) as refused:
                client.define_metric("other")
            assert refused.value.status == 403
            client.record("calls", "org", "o", timestamp=JAN)
            assert client.get_usage_summary("calls", "org", "o", at=AT).record_count == 1


def test_no_server_is_storage_unavailable_after_retries() -> None:
    from tests.influx_server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with (
        Client(url, retry=Retry(attempts=3, backoff=0.01)) as client,
        pytest.raises(StorageUnavailableError, match="no answer"),
    ):
        client.record("m", "org", "o")


@pytest.mark.parametrize("name", NASTY_NAMES, ids=range(len(NASTY_NAMES)))
def test_hostile_names_are_data(live: LiveServer, name: str) -> None:
    """Names that break encoders, as metric key, subject and metadata, in paths, queries and
    bodies, come back as they went."""
    key = f"{name[:200]}/{uuid.uuid4().hex[:8]}"
    with Client(live.url) as client:
        client.define_metric(key, aggregation_type="COUNT", unit=name)
        assert client.get_metric(key).unit == name
        stored = client.record(
            key,
            name,
            name,
            id=f"{name[:200]}-id",
            metadata={name: [name]},
            source=name,
            timestamp=JAN,
        )
        assert (stored.subject_type, stored.subject_id, stored.source) == (name, name, name)
        assert stored.metadata == {name: [name]}
        assert client.get_usage_summary(key, name, name, at=AT).record_count == 1
        (read,) = client.get_usage(key, name, name)
        assert read == stored
