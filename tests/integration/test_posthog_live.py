"""The reader against a real PostHog project: run only when ``TSMETER_POSTHOG_PERSONAL_API_KEY``,
``TSMETER_POSTHOG_HOST`` and ``TSMETER_POSTHOG_PROJECT_ID`` are set (skipped otherwise).

Read-only by default: every query the reader builds (every period type, hostile values in
every parameter) must be accepted by PostHog itself and return nothing for a metric that
does not exist. With ``TSMETER_POSTHOG_API_KEY`` (the project key) as well, a round trip:
a few records under a fresh metric key are mirrored, read back once ingested (up to
``TSMETER_POSTHOG_LIVE_WAIT`` seconds, default 180) and reconciled with the store.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

import tsmeter
from tests.hostile import NASTY_NAMES
from tsmeter.domain import PeriodType
from tsmeter.integrations.posthog import PostHogMirror, PostHogSettings
from tsmeter.integrations.posthog.reader import PostHogReader
from tsmeter.integrations.posthog.reconcile import reconcile

NEEDED = ("TSMETER_POSTHOG_PERSONAL_API_KEY", "TSMETER_POSTHOG_HOST", "TSMETER_POSTHOG_PROJECT_ID")
_missing = [name for name in NEEDED if not os.environ.get(name, "").strip()]

pytestmark = pytest.mark.skipif(
    bool(_missing), reason=f"live PostHog tests need {', '.join(_missing)} (not set)"
)

END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
START = END - timedelta(days=2)


@pytest.fixture(scope="module")
def reader() -> PostHogReader:
    """A reader on the configured project (a few retries: the project's rate limit is shared)."""
    return PostHogReader(PostHogSettings.from_env(), max_retry_wait=30)


def test_every_query_is_accepted_by_posthog(reader: PostHogReader) -> None:
    """Records, summaries and trends of every period type run on PostHog itself and find
    nothing for a metric key that was never recorded."""
    key = f"tsmeter_live_absent_{uuid.uuid4().hex}"
    assert reader.get_usage(key, "org", "nobody", start=START, end=END) == []
    for period in PeriodType:
        assert reader.get_usage_summaries(key, period, start=START, end=END) == []
        assert reader.get_trend(key, period, start=START, end=END) == []
    assert reader.get_trend(key, "DAILY", start=START, end=END, aggregation="LAST") == []


def test_hostile_values_are_only_values_on_posthog(reader: PostHogReader) -> None:
    """Nasty names in every parameter are bound as values: PostHog runs the queries and
    matches nothing (no error, no injected condition)."""
    for nasty in NASTY_NAMES[:12]:
        assert reader.get_usage(nasty, nasty, nasty, start=START, end=END, org_id=nasty) == []
        assert reader.get_usage_summaries(nasty, "HOURLY", start=START, end=END,
                                          subject_type=nasty, subject_id=nasty,
                                          org_id=nasty) == []  # fmt: skip


@pytest.mark.skipif(
    not os.environ.get("TSMETER_POSTHOG_API_KEY"),
    reason="the live round trip also needs TSMETER_POSTHOG_API_KEY (the project key)",
)
def test_round_trip_through_a_real_project(reader: PostHogReader, tmp_path: object) -> None:
    """Records mirrored to the project come back through the query API and reconcile."""
    key = f"tsmeter_live_{uuid.uuid4().hex[:12]}"
    base = END - timedelta(hours=3)
    with tsmeter.connect("sqlite:///:memory:") as meter:
        meter.define_metric(key, aggregation_type="SUM")
        mirror = meter.mirror  # attached by connect(): the key is in the environment
        assert isinstance(mirror, PostHogMirror)
        meter.record_batch([{"id": f"{key}-{i}", "metricKey": key, "subjectType": "org",
                             "subjectId": f"live-{i % 2}", "quantity": i + 0.5,
                             "timestamp": (base + timedelta(minutes=i)).isoformat()}
                            for i in range(6)])  # fmt: skip
        assert mirror.shutdown(timeout=30)
        wait = float(os.environ.get("TSMETER_POSTHOG_LIVE_WAIT", "180"))
        deadline = time.monotonic() + wait
        records = []
        while time.monotonic() < deadline:
            records = reader.get_usage(key, start=START, end=END)
            if len(records) == 6:
                break
            time.sleep(10)
        assert sorted(r.id for r in records) == [f"{key}-{i}" for i in range(6)]
        assert sorted(str(r.quantity) for r in records) == [f"{i}.500000" for i in range(6)]
        result = reconcile(meter, reader, key, "HOURLY", start=START, end=END)
        assert result.ok and result.differences == [], result.differences
