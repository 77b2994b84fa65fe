"""API-key authentication in a real uvicorn process (a tiny app guarded by
:class:`tsmeter.api.auth.Authenticator` over the keys of an embedded store): 401 with
``WWW-Authenticate: Bearer`` without a valid key, 403 without the scope, problem+json bodies,
revocation by another process honoured within the cache time, and keys never in the log."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import tsmeter
from tests.hostile import NASTY_NAMES
from tests.influx_server import _die_with_parent, free_port
from tsmeter.access import ApiKeys, IssuedKey

ROOT = Path(__file__).resolve().parents[2]
CACHE_SECONDS = 1.0


class Server:
    """The app of ``tests/auth_app.py`` on uvicorn, on a free loopback port."""

    def __init__(self, store: str, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TSMETER_")}
        environ.update(PYTHONPATH=str(ROOT), AUTH_TEST_STORE=store,
                       AUTH_TEST_CACHE=str(CACHE_SECONDS), **env)  # fmt: skip
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "tests.auth_app:create",
                 "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "debug"],
                cwd=ROOT, env=environ, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/open", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the auth app did not start:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    tsmeter.connect(url, mirror=False).close()
    return url


@pytest.fixture
def keys(store: str) -> Iterator[ApiKeys]:
    """The store's keys, from this process (as the CLI would manage them)."""
    with tsmeter.connect(store, create=False, mirror=False) as meter:
        assert meter.api_keys is not None
        yield meter.api_keys


@pytest.fixture
def server(store: str, tmp_path: Path) -> Iterator[Server]:
    running = Server(store, tmp_path / "server.log")
    yield running
    running.stop()


def bearer(issued: IssuedKey | str) -> dict[str, str]:
    key = issued if isinstance(issued, str) else issued.key
    return {"Authorization": f"Bearer {key}"}


def assert_problem(response: httpx.Response, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert body["errors"] == []
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    else:
        assert "www-authenticate" not in response.headers


def test_requests_without_a_valid_key_get_401(server: Server, keys: ApiKeys) -> None:
    issued = keys.create("svc", ["admin"])
    tampered = issued.key[:-1] + ("A" if issued.key[-1] != "A" else "B")
    for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer"},
                    {"Authorization": f"Basic {issued.key}"}, bearer("tsm_nope"),
                    bearer(tampered), bearer("x" * 5000)):  # fmt: skip
        response = httpx.post(f"{server.url}/ingest", headers=headers)
        assert_problem(response, 401, "unauthorized")
        assert issued.key not in response.text
    assert httpx.post(f"{server.url}/ingest", headers=bearer(issued)).status_code == 200


def test_a_key_without_the_scope_gets_403_and_admin_gets_everywhere(
    server: Server, keys: ApiKeys
) -> None:
    ingest, read = keys.create("in", ["ingest"]), keys.create("out", ["read"])
    both, admin = keys.create("both", ["ingest", "read"]), keys.create("root", ["admin"])
    cases = [
        (ingest, {"/ingest": 200, "/read": 403, "/admin": 403}),
        (read, {"/ingest": 403, "/read": 200, "/admin": 403}),
        (both, {"/ingest": 200, "/read": 200, "/admin": 403}),
        (admin, {"/ingest": 200, "/read": 200, "/admin": 200}),
    ]
    for issued, expected in cases:
        for path, status in expected.items():
            method = httpx.post if path == "/ingest" else httpx.get
            response = method(f"{server.url}{path}", headers=bearer(issued))
            if status == 200:
                assert response.json() == {"key": issued.api_key.id}, (issued, path)
            else:
                assert_problem(response, 403, "forbidden")
                assert issued.api_key.id in response.json()["detail"]


def test_a_revocation_elsewhere_is_honoured_within_the_cache_time(
    server: Server, keys: ApiKeys
) -> None:
    issued = keys.create("svc", ["ingest"])
    assert httpx.post(f"{server.url}/ingest", headers=bearer(issued)).status_code == 200
    keys.revoke(issued.api_key.id)  # another process: the CLI, or another server
    revoked_at = time.monotonic()
    while httpx.post(f"{server.url}/ingest", headers=bearer(issued)).status_code == 200:
        assert time.monotonic() - revoked_at < CACHE_SECONDS + 1, "still accepted"
        time.sleep(0.05)
    assert_problem(httpx.post(f"{server.url}/ingest", headers=bearer(issued)), 401,
                   "unauthorized")  # fmt: skip


def test_keys_never_reach_the_log_and_hostile_names_are_data(
    server: Server, keys: ApiKeys, tmp_path: Path
) -> None:
    made = [keys.create(name, ["read"]) for name in NASTY_NAMES]
    with httpx.Client() as client:
        for issued in made:
            assert client.get(f"{server.url}/read", headers=bearer(issued)).status_code == 200
            assert client.post(f"{server.url}/ingest", headers=bearer(issued)).status_code == 403
    server.stop()
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert "GET /read" in log  # the access log is on, at debug level
    for issued in made:
        assert issued.key.split("_", 2)[2] not in log


def test_authentication_off_lets_every_request_through(store: str, tmp_path: Path) -> None:
    running = Server(store, tmp_path / "off.log", AUTH_TEST_OFF="1")
    try:
        for path in ("/read", "/admin"):
            response = httpx.get(f"{running.url}{path}", headers=bearer("tsm_whatever"))
            assert response.json() == {"key": None}
        assert httpx.post(f"{running.url}/ingest").json() == {"key": None}
    finally:
        running.stop()
