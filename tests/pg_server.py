"""A real PostgreSQL server (Debian's ``postgresql-15``) on 127.0.0.1, made from scratch, for tests.

``initdb`` makes a cluster in a temporary directory; ``postgres`` runs it on a free port of
127.0.0.1 (its Unix socket in the same directory), with password logins (SCRAM) for the
superuser ``tsmeter``. As root, both run as the ``postgres`` user the Debian package creates,
since PostgreSQL refuses to run as root. fsync is off: the tests' data is thrown away, and
what a crash of the server loses is not what they test. The server is stopped by its PID,
and Linux stops it if the thread that started it dies.

Example (the module's doctests stay server-free)::

    server = PostgresServer().start()
    url = server.create_database("demo")     # postgresql://tsmeter:...@127.0.0.1:PORT/demo
    server.stop()
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.influx_server import _die_with_parent, free_port

__all__ = ["PostgresServer", "PostgresServerError", "find_pg_bin", "free_port"]

_BIN_DIRS = (
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/17/bin",
)
_PR_SET_PDEATHSIG = 1
USER = "tsmeter"


class PostgresServerError(RuntimeError):
    """The server could not be made or started; ``log_tail`` holds the end of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.reason = message
        self.log_tail = log_tail


def find_pg_bin() -> str | None:
    """The directory holding ``initdb`` and ``postgres`` ($TSMETER_PG_BIN, else Debian's)."""
    named = os.environ.get("TSMETER_PG_BIN")
    for candidate in ([named] if named else []) + list(_BIN_DIRS):
        if os.access(os.path.join(candidate, "initdb"), os.X_OK):
            return candidate
    return None


def _as_postgres() -> tuple[int, int] | None:
    """(uid, gid) to run the server as: the ``postgres`` user when this process is root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresServerError(
            "running as root and there is no 'postgres' user (apt-get install postgresql)"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _child_setup(ids: tuple[int, int] | None) -> None:  # pragma: no cover - runs in the child
    """Between fork and exec: die with the parent thread, and drop root for PostgreSQL."""
    _die_with_parent()
    if ids is not None:
        os.setgroups([])
        os.setgid(ids[1])
        os.setuid(ids[0])


class PostgresServer:
    """One PostgreSQL cluster and its ``postgres`` process, all on 127.0.0.1."""

    def __init__(self, bin_dir: str | None = None, *, startup_timeout: float = 60.0) -> None:
        self.bin_dir = bin_dir or find_pg_bin()
        self.startup_timeout = startup_timeout
        self.password = secrets.token_hex(12)
        self.port = 0
        self.root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._ids: tuple[int, int] | None = None

    @property
    def pid(self) -> int | None:
        """The server's PID while it runs."""
        return self._process.pid if self._process is not None else None

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        """A ``postgresql://`` URL for ``database`` with the superuser's login."""
        secret = self.password if password is None else password
        return f"postgresql://{USER}:{secret}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        """Make the cluster and start the server; return once it takes logins."""
        if self.bin_dir is None:
            raise PostgresServerError("initdb not found (Debian: apt-get install postgresql)")
        self._ids = _as_postgres()
        self.root = Path(tempfile.mkdtemp(prefix="tsmeter-pg-"))
        if self._ids is not None:
            os.chown(self.root, *self._ids)
        data = self.root / "data"
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._ids is not None:
            os.chown(pwfile, *self._ids)
        made = subprocess.run(
            [f"{self.bin_dir}/initdb", "-D", str(data), "-U", USER, "--pwfile", str(pwfile),
             "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            capture_output=True, preexec_fn=lambda: _child_setup(self._ids), check=False,
        )  # fmt: skip
        pwfile.unlink()
        if made.returncode != 0:
            raise PostgresServerError("initdb failed", made.stderr.decode(errors="replace"))
        self.port = free_port()
        return self._run()

    def resume(self) -> PostgresServer:
        """Start the server again after ``halt``, on the same cluster and port."""
        if self.root is None or self._process is not None:
            raise PostgresServerError("resume needs a halted server")
        return self._run()

    def _run(self) -> PostgresServer:
        assert self.root is not None
        data = self.root / "data"
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self._process = subprocess.Popen(
                [f"{self.bin_dir}/postgres", "-D", str(data), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=200", "-c", "shared_buffers=64MB"],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: _child_setup(self._ids),
            )  # fmt: skip
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise PostgresServerError("postgres exited at start", self.log_tail())
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                if self._ready():
                    return self
            time.sleep(0.1)
        raise PostgresServerError("postgres did not take logins in time", self.log_tail())

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def create_database(self, name: str) -> str:
        """Create an empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending its sessions."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log."""
        if self.root is None or not (self.root / "server.log").exists():
            return ""
        text = (self.root / "server.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def halt(self) -> None:
        """Stop the process (fast shutdown), keeping the cluster; ``resume`` starts it again."""
        if self._process is not None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def stop(self) -> None:
        """Stop the server and delete its directory."""
        self.halt()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
