"""The job-lease contract (:class:`tsmeter.ports.JobLeases`), run against both adapters: the
SQLite state file (several schedulers on one host) and PostgreSQL (a fleet), the latter on a
real server. Racing processes meet at a barrier before they call."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.lease_worker import open_leases, race
from tsmeter.adapters.postgres.database import StateDatabase
from tsmeter.adapters.postgres.leases import PostgresLeases
from tsmeter.adapters.sqlite.leases import SQLiteLeases
from tsmeter.errors import ValidationError
from tsmeter.ports import JobLeases

HOSTILE = "host,a=1 \"q\" 'x'; DROP TABLE job_runs;--\n\\ é 🙂"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, where): a fresh SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "state.db")
    return "postgres", str(request.getfixturevalue("pg_url"))


@pytest.fixture
def opened(target: tuple[str, str]) -> Iterator[list[JobLeases]]:
    """Lease stores a test opens on ``target``; closed afterwards."""
    stores: list[JobLeases] = []
    yield stores
    for store in stores:
        if isinstance(store, PostgresLeases):
            store.db.close()
        elif isinstance(store, SQLiteLeases):
            store.close()


@pytest.fixture
def leases(target: tuple[str, str], opened: list[JobLeases]) -> JobLeases:
    store = open_leases(*target)
    opened.append(store)
    return store


def test_one_holder_at_a_time_renewal_and_expiry(leases: JobLeases) -> None:
    assert leases.acquire("a", 0.6)
    assert not leases.acquire("b", 0.6)
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:  # renewals keep it from expiring past one ttl
        assert leases.acquire("a", 0.6)
        assert not leases.acquire("b", 0.6)
        time.sleep(0.15)
    time.sleep(0.75)  # no renewal for longer than the ttl: it expired
    assert leases.acquire("b", 0.6)
    assert not leases.acquire("a", 0.6)


def test_release_hands_the_lease_over_at_once(leases: JobLeases) -> None:
    assert leases.acquire("a", 60)
    leases.release("b")  # not b's to release: nothing happens
    assert not leases.acquire("b", 60)
    leases.release("a")
    assert leases.acquire("b", 60)
    leases.release("a")  # no longer a's
    assert not leases.acquire("a", 60)


def test_a_period_is_claimed_once_and_only_by_the_holder(leases: JobLeases) -> None:
    assert not leases.claim_run("agg", 0, "a")  # no lease, no claim
    assert leases.acquire("a", 60)
    assert not leases.claim_run("agg", 0, "b")
    assert leases.claim_run("agg", 0, "a")
    assert not leases.claim_run("agg", 0, "a")  # running: not twice
    assert leases.claim_run("agg", 3_600_000_000_000, "a")  # another period
    assert leases.claim_run("other", 0, "a")  # another job
    leases.finish_run("agg", 0, "a", ok=True)
    leases.release("a")
    assert leases.acquire("b", 60)
    assert not leases.claim_run("agg", 0, "b")  # finished: never again
    # a's unfinished claims were cut off by the lease moving: the new holder may re-run them
    assert leases.claim_run("agg", 3_600_000_000_000, "b")
    assert leases.claim_run("other", 0, "b")
    leases.finish_run("other", 0, "a", ok=True)  # a's claim is gone: this changes nothing
    assert leases.claim_run("next", 0, "b")


def test_a_failed_run_is_finished_too(leases: JobLeases) -> None:
    assert leases.acquire("a", 60)
    assert leases.claim_run("agg", 7, "a")
    leases.finish_run("agg", 7, "a", ok=False)
    leases.release("a")
    assert leases.acquire("b", 60)
    assert not leases.claim_run("agg", 7, "b")


def test_a_claim_by_a_dead_holder_is_taken_over_after_its_lease_expires(
    leases: JobLeases,
) -> None:
    assert leases.acquire("a", 0.4)
    assert leases.claim_run("agg", 1, "a")
    assert not leases.acquire("b", 0.4)
    time.sleep(0.5)
    assert leases.acquire("b", 60)
    assert leases.claim_run("agg", 1, "b")
    assert not leases.claim_run("agg", 1, "b")


def test_hostile_names_are_data(leases: JobLeases, target: tuple[str, str]) -> None:
    assert leases.acquire(HOSTILE, 60)
    assert not leases.acquire(HOSTILE + "2", 60)
    assert leases.claim_run(HOSTILE, -5, HOSTILE)
    assert not leases.claim_run(HOSTILE, -5, HOSTILE)
    leases.finish_run(HOSTILE, -5, HOSTILE, ok=True)
    named = open_leases(*target, name=HOSTILE)
    try:
        assert named.acquire("x", 60)  # a lease of another name is independent
    finally:
        if isinstance(named, PostgresLeases):
            named.db.close()
        elif isinstance(named, SQLiteLeases):
            named.close()
    leases.release(HOSTILE)
    assert leases.acquire("c", 60)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.acquire("", 10), "holder"),
        (lambda s: s.acquire("a\x00b", 10), "holder"),
        (lambda s: s.acquire("a", 0), "ttl_s"),
        (lambda s: s.acquire("a", -1), "ttl_s"),
        (lambda s: s.acquire("a", float("nan")), "ttl_s"),
        (lambda s: s.acquire("a", float("inf")), "ttl_s"),
        (lambda s: s.acquire("a", "10"), "ttl_s"),
        (lambda s: s.claim_run("", 0, "a"), "job"),
        (lambda s: s.claim_run("j", 1.5, "a"), "period_start_ns"),
        (lambda s: s.claim_run("j", 2**63, "a"), "period_start_ns"),
        (lambda s: s.finish_run("j", True, "a", ok=True), "period_start_ns"),
        (lambda s: s.release(""), "holder"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(
    leases: JobLeases, call: object, field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        call(leases)  # type: ignore[operator]
    assert caught.value.field == field


def _race(
    target: tuple[str, str], leases: list[str], periods: int
) -> list[tuple[str, bool, list[int]]]:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(leases)), ctx.Queue()
    procs = [
        ctx.Process(target=race, args=(*target, lease, f"h{i}", periods, barrier, results))
        for i, lease in enumerate(leases)
    ]
    for proc in procs:
        proc.start()
    try:
        found = [results.get(timeout=60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
    assert [proc.exitcode for proc in procs] == [0] * len(procs)
    return sorted(found)


def test_three_processes_racing_for_one_lease_one_wins(target: tuple[str, str]) -> None:
    found = _race(target, ["scheduler"] * 3, periods=20)
    winners = [(holder, claimed) for holder, acquired, claimed in found if acquired]
    assert len(winners) == 1
    assert winners[0][1] == list(range(20))
    assert all(claimed == [] for _, acquired, claimed in found if not acquired)


def test_three_live_holders_racing_for_claims_each_period_is_claimed_once(
    target: tuple[str, str],
) -> None:
    """Three processes each hold a lease of their own (so all are live holders) and claim the
    same 300 periods at once: every period goes to exactly one of them."""
    found = _race(target, ["g0", "g1", "g2"], periods=300)
    assert all(acquired for _, acquired, _ in found)
    claims = [p for _, _, claimed in found for p in claimed]
    assert sorted(claims) == list(range(300))


@pytest.mark.postgres
def test_postgres_uses_the_database_clock_not_the_hosts(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With this host's clock a day ahead, leases still expire by the database's clock: the
    adapter never reads the host's time."""
    db = StateDatabase(pg_url)
    try:
        leases = PostgresLeases(db)
        real_ns, real_s = time.time_ns, time.time
        monkeypatch.setattr(time, "time_ns", lambda: real_ns() + 86_400 * 10**9)
        monkeypatch.setattr(time, "time", lambda: real_s() + 86_400)
        assert leases.acquire("a", 0.5)
        assert not leases.acquire("b", 0.5)
        with psycopg.connect(pg_url) as conn:
            row = conn.execute(
                "SELECT renewed_at, expires_at,"
                " (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint"
                " FROM job_leases WHERE name = 'scheduler'"
            ).fetchone()
        assert row is not None
        renewed, expires, db_now = row
        assert expires - renewed == 500_000_000
        assert 0 <= db_now - renewed < 5 * 10**9
        time.sleep(0.6)
        assert leases.acquire("b", 0.5)
    finally:
        db.close()
