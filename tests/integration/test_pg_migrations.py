"""The PostgreSQL state store's schema migrations, on a real server: from an empty database,
from the previous version, by several hosts at once, and refusals that say why."""

from __future__ import annotations

import multiprocessing
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from tests.pg_server import PostgresServer
from tsmeter.adapters.postgres import migrations
from tsmeter.adapters.postgres.database import StateDatabase, redact
from tsmeter.bootstrap import migrate_state
from tsmeter.cli.main import cli
from tsmeter.errors import StorageUnavailableError

LATEST = migrations.MIGRATIONS[-1].version


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {name for (name,) in rows}


def _versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM tsmeter_schema ORDER BY 1")]


def test_migrations_are_numbered_once_and_in_order() -> None:
    versions = [m.version for m in migrations.MIGRATIONS]
    assert versions == sorted(set(versions))
    assert versions[0] == 1


def test_an_empty_database_gets_every_migration(pg_url: str) -> None:
    done, before = migrate_state(pg_url)
    assert before == []
    assert [int(name.split()[0]) for name in done] == [m.version for m in migrations.MIGRATIONS]
    assert _versions(pg_url) == [m.version for m in migrations.MIGRATIONS]
    assert {"metrics", "thresholds", "alerts", "notify_deliveries", "dedupe_ids",
            "job_leases", "tsmeter_schema"} <= _tables(pg_url)  # fmt: skip
    assert migrate_state(pg_url) == ([], [f"{m.version:04d} {m.name}"
                                          for m in migrations.MIGRATIONS])  # fmt: skip


def test_the_previous_version_is_brought_up_keeping_its_rows(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        migrations.migrate(conn, redact(pg_url), upto=LATEST - 1)
        conn.execute(
            "INSERT INTO metrics (id, org_key, key, doc) VALUES ('m1', '', 'api_calls', '{}')"
        )
        conn.commit()
    assert _versions(pg_url) == list(range(1, LATEST))
    db = StateDatabase(pg_url)  # opening applies what is pending
    try:
        with db.transaction() as conn:
            kept = conn.execute("SELECT id, key FROM metrics").fetchall()
    finally:
        db.close()
    assert kept == [("m1", "api_calls")]
    assert _versions(pg_url) == list(range(1, LATEST + 1))


def _open(url: str, start: Any, results: Any) -> None:
    start.wait(timeout=60)
    try:
        StateDatabase(url).close()
        results.put("ok")
    except BaseException as exc:  # reported to the parent
        results.put(f"{type(exc).__name__}: {exc}")


def test_hosts_starting_at_once_apply_each_migration_once(pg_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(pg_url, start, results)) for _ in range(4)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert outcomes == ["ok"] * 4
    assert _versions(pg_url) == [m.version for m in migrations.MIGRATIONS]


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    StateDatabase(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO tsmeter_schema (version, name) VALUES (9999, 'future')")
    with pytest.raises(StorageUnavailableError, match="9999, newer than this tsmeter"):
        StateDatabase(pg_url)


def test_a_wrong_password_is_one_error_without_the_password(postgres: PostgresServer) -> None:
    url = postgres.url("postgres", password="hunter2-wrong")
    with pytest.raises(StorageUnavailableError) as caught:
        StateDatabase(url)
    text = str(caught.value)
    assert "hunter2" not in text
    assert "password authentication failed" in text
    assert f"postgresql://tsmeter:***@127.0.0.1:{postgres.port}/postgres" in text


def test_a_server_that_is_down_is_one_error_naming_the_url(postgres: PostgresServer) -> None:
    from tests.pg_server import free_port

    url = f"postgresql://meter:s3cret@127.0.0.1:{free_port()}/state"
    with pytest.raises(StorageUnavailableError) as caught:
        StateDatabase(url, timeout=2)
    assert "s3cret" not in str(caught.value)
    assert "postgresql://meter:***@127.0.0.1:" in str(caught.value)
    assert "refused" in str(caught.value)


def test_the_cli_migrates_and_says_when_up_to_date(pg_url: str) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["state", "migrate", "--url", pg_url, "--dry-run"])
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[0] == "would apply 0001 catalog"
    assert _tables(pg_url) == set()
    second = runner.invoke(cli, ["state", "migrate", "--url", pg_url])
    assert second.exit_code == 0, second.output
    assert len(second.output.splitlines()) == len(migrations.MIGRATIONS)
    third = runner.invoke(cli, ["state", "migrate"], env={"TSMETER_STATE_URL": pg_url})
    assert third.exit_code == 0, third.output
    assert (
        third.output.strip()
        == f"up to date ({len(migrations.MIGRATIONS)} migrations applied before)"
    )


def test_the_cli_without_a_state_url_says_how_to_name_one(tmp_path: Any) -> None:
    result = CliRunner().invoke(cli, ["--store", str(tmp_path / "x.db"), "state", "migrate"],
                                env={"TSMETER_STATE_URL": ""})  # fmt: skip
    assert result.exit_code == 1
    assert "TSMETER_STATE_URL" in result.output


def test_the_cli_status_lists_applied_and_pending_migrations(pg_url: str) -> None:
    runner = CliRunner()
    with psycopg.connect(pg_url) as conn:
        migrations.migrate(conn, redact(pg_url), upto=LATEST - 1)
    before = runner.invoke(cli, ["state", "status", "--url", pg_url])
    assert before.exit_code == 1, before.output
    lines = before.output.splitlines()
    assert lines[-1] == f"pending {LATEST:04d} {migrations.MIGRATIONS[-1].name}"
    assert sum(line.startswith("applied ") for line in lines) == LATEST - 1
    assert runner.invoke(cli, ["state", "migrate", "--url", pg_url]).exit_code == 0
    after = runner.invoke(cli, ["state", "status", "--url", pg_url])
    assert after.exit_code == 0, after.output
    assert all(line.startswith("applied ") for line in after.output.splitlines())
