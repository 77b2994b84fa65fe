"""Reconciliation end to end: the embedded store, the PostHog mirror posting to a local
capture server through the real SDK, a local query endpoint fed with what was captured, and
``tsmeter reconcile`` finding what was deliberately lost, added or changed on the way."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

import tsmeter
from tests.posthog_capture import capture_server
from tests.posthog_query_server import QueryServer, query_server
from tsmeter.cli.main import cli
from tsmeter.cli.reconcile import DIFFERENCES_FOUND
from tsmeter.cli.reconcile import reconcile as reconcile_command
from tsmeter.domain import PeriodType
from tsmeter.errors import ValidationError
from tsmeter.integrations.posthog import PostHogMirror, PostHogSettings
from tsmeter.integrations.posthog.reader import PostHogReader
from tsmeter.integrations.posthog.reconcile import DifferenceKind, Tolerance, reconcile

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOSTILE = 'org "9", \\x=1 \U0001f600'

#: ``tsmeter`` with ``reconcile`` registered (as tsmeter/cli/main.py does once it is wired).
root = copy.copy(cli)
root.commands = {**cli.commands, "reconcile": reconcile_command}
assert isinstance(root, click.Group)


def _records() -> list[dict[str, Any]]:
    """Three days of usage by three subjects (one with a hostile id), every few hours."""
    out = []
    for i in range(36):
        subject = ("org-1", "org-2", HOSTILE)[i % 3]
        out.append({"id": f"rec-{i}", "metricKey": "api_calls", "subjectType": "org",
                    "subjectId": subject, "quantity": 1 + i % 4,
                    "timestamp": (T0 + timedelta(hours=2 * i, minutes=i)).isoformat()})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def mirrored(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """A store with 36 records of ``api_calls`` (SUM), and the events the mirror delivered
    for them to the capture server (through the posthog SDK, v0 /batch/ protocol)."""
    path = tmp_path_factory.mktemp("reconcile") / "usage.db"
    with capture_server() as capture:
        meter = tsmeter.connect(f"sqlite:///{path}")
        try:
            meter.define_metric("api_calls", aggregation_type="SUM")
            settings = PostHogSettings(api_key="phc_test", host=capture.host, flush_interval=0.05)
            mirror = PostHogMirror(settings, meter, journal=str(path) + ".journal")
            meter.record_batch(_records())
            assert mirror.flush(15)
            assert mirror.shutdown(5)
        finally:
            meter.close()
        events = capture.accepted()
    assert len(events) == 36 and all(e["event"] == "metering.usage_recorded" for e in events)
    yield path, events


@pytest.fixture
def endpoint() -> Iterator[QueryServer]:
    """The local query endpoint; a request that broke PostHog's rules fails the test."""
    with query_server() as server:
        yield server
        assert server.failures == [], "\n\n".join(server.failures)


def env_for(server: QueryServer) -> dict[str, str]:
    """The environment that points ``tsmeter reconcile`` at the local endpoint."""
    return {"TSMETER_POSTHOG_HOST": server.url, "TSMETER_POSTHOG_PERSONAL_API_KEY": server.token,
            "TSMETER_POSTHOG_PROJECT_ID": server.project_id, "TSMETER_TIMEZONE": ""}  # fmt: skip


def run(path: Path, server: QueryServer, *args: str, fmt: str = "table") -> Result:
    """``tsmeter --store PATH --format FMT reconcile api_calls ARGS`` over the first 3 days."""
    argv = ["--store", str(path), "--format", fmt, "reconcile", "api_calls",
            "--from", "2026-01-01", "--to", "2026-01-04", *args]  # fmt: skip
    return CliRunner().invoke(root, argv, env=env_for(server))


def test_a_dropped_event_is_found(mirrored: tuple[Path, list[dict[str, Any]]],
                                  endpoint: QueryServer) -> None:  # fmt: skip
    """One event lost between the mirror and PostHog (and three stored twice): exit status 3,
    one row naming the subject, the UTC day, both totals and both record counts."""
    path, events = mirrored
    lost = next(e for e in events if e["properties"]["recordId"] == "rec-13")  # org-2, Jan 2
    endpoint.add_events([e for e in events if e is not lost] + events[:3])
    result = run(path, endpoint)
    assert result.exit_code == DIFFERENCES_FOUND, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SUBJECT", "TYPE", "SUBJECT", "ID", "PERIOD", "START", "STORE",
                                "POSTHOG", "DIFFERENCE", "RECORDS", "KIND"]  # fmt: skip
    assert len(lines) == 3, result.stdout
    row = lines[2]
    assert "org-2" in row and "2026-01-02T00:00:00+00:00" in row
    assert "missing in PostHog" in row and "4/3" in row and " -2.000000 " in row
    assert "1 beyond tolerance 0" in result.stderr and "compared 9 subject-periods" in result.stderr

    doc = json.loads(run(path, endpoint, fmt="json").stdout)
    assert doc == [{
        "subjectType": "org", "subjectId": "org-2", "periodStart": "2026-01-02T00:00:00+00:00",
        "periodEnd": "2026-01-03T00:00:00+00:00", "primary": "10.000000", "posthog": "8.000000",
        "difference": "-2.000000", "primaryRecords": 4, "posthogRecords": 3,
        "kind": "missing in PostHog", "beyondTolerance": True,
    }]  # fmt: skip

    within = run(path, endpoint, "--tolerance", "2")
    assert within.exit_code == 0, within.output  # listed, but within the tolerance
    assert "missing in PostHog (within tolerance)" in within.stdout
    relative = run(path, endpoint, "--tolerance", "10%")
    assert relative.exit_code == DIFFERENCES_FOUND  # 2 of 10 is more than 10 %


def test_complete_copies_agree(mirrored: tuple[Path, list[dict[str, Any]]],
                               endpoint: QueryServer) -> None:  # fmt: skip
    """Every event delivered (some twice): exit status 0 and nothing listed."""
    path, events = mirrored
    endpoint.add_events(events + events[5:9])
    for period in ("day", "hour", "week", "month"):
        result = run(path, endpoint, "--period", period)
        assert result.exit_code == 0, result.output
        assert result.stdout == ""
        assert "the copies agree (tolerance 0)" in result.stderr
    assert json.loads(run(path, endpoint, fmt="json").stdout) == []


def test_hourly_reconciliation_pins_the_hour(mirrored: tuple[Path, list[dict[str, Any]]],
                                             endpoint: QueryServer) -> None:  # fmt: skip
    """With --period hour the dropped event's UTC hour is named, for the hostile subject."""
    path, events = mirrored
    lost = next(e for e in events if e["properties"]["recordId"] == "rec-2")  # HOSTILE, 04:02
    endpoint.add_events([e for e in events if e is not lost])
    doc = json.loads(run(path, endpoint, "--period", "hour", fmt="json").stdout)
    assert [(d["subjectId"], d["periodStart"], d["kind"], d["primaryRecords"],
             d["posthogRecords"]) for d in doc] == [
        (HOSTILE, "2026-01-01T04:00:00+00:00", "missing in PostHog", 1, 0)
    ]  # fmt: skip


def test_extra_and_drifted_events(mirrored: tuple[Path, list[dict[str, Any]]],
                                  endpoint: QueryServer) -> None:  # fmt: skip
    """An event PostHog has but the store does not is 'extra'; changed units with the same
    counts are 'value drift' (the float ``quantity`` is only for PostHog's charts)."""
    path, events = mirrored
    changed = json.loads(json.dumps(events[0]))
    assert changed["properties"]["units"] == 1_000_000 and changed["properties"]["precision"] == 6
    changed["properties"]["units"] = 100_000_000
    stranger = json.loads(json.dumps(events[1]))
    stranger.update(uuid="00000000-0000-4000-8000-000000000001")
    stranger["properties"].update(recordId="not-in-store", subjectId="org-404")
    endpoint.add_events([changed, stranger, *events[1:]])
    result = run(path, endpoint, fmt="json")
    assert result.exit_code == DIFFERENCES_FOUND
    kinds = {(d["subjectId"], d["kind"], d["difference"]) for d in json.loads(result.stdout)}
    assert kinds == {("org-1", "value drift", "99.000000"),
                     ("org-404", "extra in PostHog", "2.000000")}  # fmt: skip
    charts_only = json.loads(json.dumps(events[0]))
    charts_only["properties"]["quantity"] = 100
    endpoint.events.clear()
    endpoint.add_events([charts_only, *events[1:]])
    assert run(path, endpoint).exit_code == 0


def test_the_library_call_and_a_non_utc_store(mirrored: tuple[Path, list[dict[str, Any]]],
                                              endpoint: QueryServer) -> None:  # fmt: skip
    """``reconcile()`` on a Meter that computes periods in Asia/Kathmandu still compares UTC
    periods (from its raw records), and finds the same single difference."""
    path, events = mirrored
    endpoint.add_events([e for e in events if e["properties"]["recordId"] != "rec-13"])
    settings = PostHogSettings(host=endpoint.url, personal_api_key=endpoint.token,
                               project_id=endpoint.project_id)  # fmt: skip
    with tsmeter.connect(f"sqlite:///{path}", timezone="Asia/Kathmandu") as meter, \
            PostHogReader(settings) as reader:  # fmt: skip
        result = reconcile(meter, reader, "api_calls", PeriodType.DAILY,
                           start=T0, end=T0 + timedelta(days=3))  # fmt: skip
        weekly = reconcile(meter, reader, "api_calls", "WEEKLY", start=T0,
                           end=T0 + timedelta(days=1), tolerance="20%")  # fmt: skip
    assert not result.ok and result.compared == 9
    (d,) = result.differences
    assert (d.subject_id, d.period_start, d.kind, str(d.primary), str(d.posthog)) == (
        "org-2",
        datetime(2026, 1, 2, tzinfo=UTC),
        DifferenceKind.MISSING,
        "10.000000",
        "8.000000",
    )
    assert weekly.start == datetime(2025, 12, 29, tzinfo=UTC)  # whole ISO weeks, UTC
    assert weekly.ok and [x.beyond_tolerance for x in weekly.differences] == [False]


def test_cli_errors_are_one_line(mirrored: tuple[Path, list[dict[str, Any]]],
                                 endpoint: QueryServer) -> None:  # fmt: skip
    """Missing settings, a wrong key, a bad tolerance or range: one 'Error:' line, status 1
    (5 when PostHog refuses the key: a service that cannot be used)."""
    path, _ = mirrored
    cases = [
        ({"TSMETER_POSTHOG_PERSONAL_API_KEY": ""}, [], "TSMETER_POSTHOG_PERSONAL_API_KEY", 1),
        ({"TSMETER_POSTHOG_PERSONAL_API_KEY": "phx_nope"}, [], "HTTP 401", 5),
        ({}, ["--tolerance", "a lot"], "tolerance", 1),
        ({}, ["--from", "2026-01-05"], "--to: must be after --from", 1),
    ]
    for env, extra, text, status in cases:
        argv = ["--store", str(path), "reconcile", "api_calls", "--from", "2026-01-01",
                "--to", "2026-01-04", *extra]  # fmt: skip
        result = CliRunner().invoke(root, argv, env={**env_for(endpoint), **env})
        assert result.exit_code == status, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and text in lines[0], lines


def test_tolerance_parsing() -> None:
    """Absolute and percentage tolerances, exact decimals compared exactly; none by default
    (not even a float's rounding); nonsense is refused."""
    assert Tolerance.parse("0.5") == Tolerance(Decimal("0.5"), False)
    assert Tolerance.parse(" 2% ") == Tolerance(Decimal(2), True)
    assert str(Tolerance.parse("2%")) == "2%" and str(Tolerance()) == "0"
    assert Tolerance.parse("1e-9").allows(Decimal(1), Decimal("1.000000000001"))
    assert not Tolerance().allows(Decimal("1000000.000000"), Decimal("1000000.000001"))
    assert Tolerance().allows(Decimal("0.10"), Decimal("0.1"))
    assert Tolerance.parse("0.1%").allows(Decimal(1000), Decimal(1001))
    assert not Tolerance.parse("0.1%").allows(Decimal(1000), Decimal("1001.000001"))
    for bad in ("-1", "nan", "inf", "%", "x%", "1e99"):
        with pytest.raises(ValidationError, match="tolerance"):
            Tolerance.parse(bad)


# -- exact totals -------------------------------------------------------------------------
def _spend() -> list[dict[str, Any]]:
    """Cents over three days and three subjects: 0.10 many times, random amounts, refunds."""
    rng = random.Random(7)
    out = []
    for i in range(240):
        amount = Decimal("0.10") if i % 2 else Decimal(rng.randint(-2_000, 50_000)).scaleb(-2)
        out.append({"id": f"s-{i}", "metricKey": "spend", "subjectType": "org",
                    "subjectId": f"org-{i % 3}", "quantity": str(amount),
                    "timestamp": (T0 + timedelta(minutes=17 * i)).isoformat()})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def spend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """A store with a metric of precision 2 (SUM), and its events as the mirror delivered them
    to the capture server through the posthog SDK."""
    path = tmp_path_factory.mktemp("spend") / "usage.db"
    with capture_server() as capture:
        meter = tsmeter.connect(f"sqlite:///{path}")
        try:
            meter.define_metric("spend", aggregation_type="SUM", precision=2)
            settings = PostHogSettings(api_key="phc_test", host=capture.host, flush_interval=0.05)
            mirror = PostHogMirror(settings, meter, journal=str(path) + ".journal")
            meter.record_batch(_spend())
            assert mirror.flush(15)
            assert mirror.shutdown(5)
        finally:
            meter.close()
        events = capture.accepted()
    assert len(events) == 240
    yield path, events


def run_spend(path: Path, server: QueryServer, *args: str) -> Result:
    argv = ["--store", str(path), "--format", "json", "reconcile", "spend", "--from",
            "2026-01-01", "--to", "2026-01-04", *args]  # fmt: skip
    return CliRunner().invoke(root, argv, env=env_for(server))


def daily_totals(records: list[dict[str, Any]]) -> dict[tuple[str, str], Decimal]:
    """Per (subject, UTC day): the sum of the records' amounts, by :mod:`decimal`."""
    out: dict[tuple[str, str], Decimal] = {}
    for r in records:
        key = (r["subjectId"], r["timestamp"][:10])
        out[key] = out.get(key, Decimal(0)) + Decimal(r["quantity"])
    return out


def test_exact_copies_agree_and_one_cent_is_found(
    spend: tuple[Path, list[dict[str, Any]]], endpoint: QueryServer
) -> None:
    """The mirror carried every amount exactly (units and precision through the SDK); the
    copies agree; one event a cent off is a drift of exactly 0.01 against the decimal sums."""
    path, events = spend
    sent = {e["properties"]["recordId"]: e["properties"] for e in events}
    for r in _spend():
        p = sent[r["id"]]
        assert (p["precision"], Decimal(p["units"]).scaleb(-2)) == (2, Decimal(r["quantity"]))
    endpoint.add_events(events)
    agreed = run_spend(path, endpoint, "--period", "day")
    assert agreed.exit_code == 0, agreed.output
    assert json.loads(agreed.stdout) == []

    off = json.loads(json.dumps(events[11]))  # s-11: org-2, 0.10
    off["properties"]["units"] += 1
    endpoint.events.clear()
    endpoint.add_events([off, *events[:11], *events[12:]])
    result = run_spend(path, endpoint)
    assert result.exit_code == DIFFERENCES_FOUND, result.output
    (d,) = json.loads(result.stdout)
    day = d["periodStart"][:10]
    expected = daily_totals(_spend())[("org-2", day)]
    assert (d["subjectId"], d["kind"], d["difference"]) == ("org-2", "value drift", "0.01")
    assert (d["primary"], d["posthog"]) == (str(expected), str(expected + Decimal("0.01")))
    assert d["primaryRecords"] == d["posthogRecords"]


def test_events_of_earlier_versions_reconcile_exactly(
    spend: tuple[Path, list[dict[str, Any]]], endpoint: QueryServer
) -> None:
    """The same events as earlier versions sent them (float quantities, no units) reconcile
    exactly with the store, read at the metric's precision; a float quantity a cent off is
    found, digit for digit."""
    path, events = spend
    old = []
    for e in events:
        legacy = json.loads(json.dumps(e))
        props = legacy["properties"]
        props["quantity"] = float(Decimal(props.pop("units")).scaleb(-props.pop("precision")))
        old.append(legacy)
    assert any(isinstance(e["properties"]["quantity"], float) for e in old)
    endpoint.add_events(old[:120] + events[120:])  # half old, half new
    for period in ("day", "week"):
        result = run_spend(path, endpoint, "--period", period)
        assert result.exit_code == 0, result.output
    endpoint.events.clear()
    old[5]["properties"]["quantity"] = round(old[5]["properties"]["quantity"] - 0.01, 2)
    endpoint.add_events(old)
    result = run_spend(path, endpoint)
    assert result.exit_code == DIFFERENCES_FOUND, result.output
    (d,) = json.loads(result.stdout)
    assert (d["subjectId"], d["difference"], d["kind"]) == ("org-2", "-0.01", "value drift")


def test_the_smallest_difference_is_reported(
    mirrored: tuple[Path, list[dict[str, Any]]], endpoint: QueryServer
) -> None:
    """One unit (0.000001) off is a difference, shown digit for digit: there is no
    allowance for float noise."""
    path, events = mirrored
    changed = json.loads(json.dumps(events[0]))
    changed["properties"]["units"] += 1
    endpoint.add_events([changed, *events[1:]])
    result = run(path, endpoint, fmt="json")
    assert result.exit_code == DIFFERENCES_FOUND, result.output
    (d,) = json.loads(result.stdout)
    assert (d["difference"], d["kind"]) == ("0.000001", "value drift")
