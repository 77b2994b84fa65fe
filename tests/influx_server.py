"""A real InfluxDB 1.x server (``influxd``) on 127.0.0.1, configured from scratch, for tests.

The server gets its own configuration file and data in a temporary directory, listens only on
127.0.0.1 (HTTP and RPC ports picked free), sends no usage reports and runs continuous queries
every second. It is stopped by its PID, never by process name.

Example (the module's doctests stay server-free)::

    server = InfluxServer().start()
    server.create_database("demo")
    server.write("demo", b"m,t=a v=1.5 1\\n")          # -> <Response [204]>
    server.series("SELECT v FROM m", "demo")            # -> [{'time': 1, 'v': 1.5}]
    server.stop()
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

__all__ = ["InfluxServer", "InfluxServerError", "find_influxd"]

_CANDIDATES = ("/usr/bin/influxd", "/usr/sbin/influxd")
_PR_SET_PDEATHSIG = 1

_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
  max-values-per-tag = {max_values_per_tag}

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  pprof-enabled = false
  unix-socket-enabled = false

[continuous_queries]
  enabled = true
  run-interval = "1s"

[monitor]
  store-enabled = false

[ifql]
  enabled = false

[logging]
  suppress-logo = true

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false
"""


class InfluxServerError(RuntimeError):
    """influxd could not be started or answered a request with an error.

    ``log_tail`` holds the last lines influxd wrote (empty when it never ran).
    """

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(
            f"{message}\n--- influxd log (tail) ---\n{log_tail}" if log_tail else message
        )
        self.reason = message
        self.log_tail = log_tail


def find_influxd() -> str | None:
    """The path of the ``influxd`` binary, or None if absent.

    ``$TSMETER_INFLUXD`` wins when set (another build, or a path that does not exist to test
    without a server); then PATH, /usr/bin and /usr/sbin.
    """
    chosen = os.environ.get("TSMETER_INFLUXD")
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    found = shutil.which("influxd")
    if found:
        return found
    for candidate in _CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the child when the thread that started it dies (no orphan servers)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _int_or_negative_zero(text: str) -> int | float:
    # InfluxDB's JSON writes the float -0.0 as ``-0``; keep its sign (no integer is ``-0``).
    return -0.0 if text == "-0" else int(text)


class InfluxServer:
    """One ``influxd`` 1.x process with its own config, data and ports, all on 127.0.0.1.

    ``restart()`` keeps the data and the ports; ``stop()`` ends the process (SIGTERM, then
    SIGKILL after ``stop_timeout`` seconds) and deletes the temporary directory. The process is
    also sent SIGTERM by Linux if the thread that started it exits, so start it from a thread
    that outlives it (pytest's main thread does).
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        startup_timeout: float = 30.0,
        stop_timeout: float = 15.0,
        max_values_per_tag: int = 100_000,
    ) -> None:
        self.binary = binary or find_influxd()
        #: influxd's ``max-values-per-tag`` (its default; tests of the limit set it small)
        self.max_values_per_tag = max_values_per_tag
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.root: Path | None = None
        self.port = 0
        self.rpc_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._session = requests.Session()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The HTTP base URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The PID of the running influxd, or None when it is not running."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def log_path(self) -> Path | None:
        """Where influxd's stdout and stderr go."""
        return None if self.root is None else self.root / "influxd.log"

    def start(self) -> InfluxServer:
        """Write a config, start influxd and wait until GET /ping answers 204; return self.

        Raises :class:`InfluxServerError` (with the log tail) if the binary is missing, the
        process exits, or it does not answer within ``startup_timeout`` seconds. A port taken
        by someone else between choosing and binding is retried with new ports (3 attempts).
        """
        if self.pid is not None:
            return self
        if self.binary is None:
            raise InfluxServerError("influxd not found on PATH, in /usr/bin or in /usr/sbin")
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="tsmeter-influxd-"))
        fresh_ports = self.port == 0
        for attempt in range(3):
            if fresh_ports:
                self.port, self.rpc_port = free_port(), free_port()
                while self.rpc_port == self.port:
                    self.rpc_port = free_port()
            try:
                self._spawn()
                return self
            except InfluxServerError as exc:
                if not (fresh_ports and "address already in use" in exc.log_tail) or attempt == 2:
                    self._terminate()
                    raise
                self._terminate()
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        assert self.root is not None and self.binary is not None
        config = self.root / "influxdb.conf"
        config.write_text(
            _CONFIG.format(
                root=self.root,
                http_port=self.port,
                rpc_port=self.rpc_port,
                max_values_per_tag=self.max_values_per_tag,
            )
        )
        with open(self.root / "influxd.log", "ab") as log:
            self._process = subprocess.Popen(
                [self.binary, "-config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise InfluxServerError(
                    f"influxd exited with status {self._process.returncode} while starting",
                    self.log_tail(),
                )
            with contextlib.suppress(requests.RequestException):
                answer = self._session.get(f"{self.url}/ping", timeout=1)
                if answer.status_code == 204 and self._process.poll() is None:
                    return
            time.sleep(0.05)
        raise InfluxServerError(
            f"influxd did not answer GET /ping with 204 within {self.startup_timeout:g} s",
            self.log_tail(),
        )

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self._session.close()
        self._session = requests.Session()

    def restart(self) -> InfluxServer:
        """Stop influxd and start it again on the same data directory and ports; return self."""
        self._terminate()
        return self.start()

    def halt(self) -> None:
        """Stop influxd (SIGTERM, then SIGKILL after ``stop_timeout``) but keep its data and
        ports: an outage, not a teardown. ``start()`` brings it back where it was."""
        self._terminate()

    def kill(self) -> None:
        """SIGKILL influxd (a crash, no clean shutdown); ``restart()`` brings it back."""
        process = self._process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self) -> None:
        """Stop influxd (SIGTERM, then SIGKILL after ``stop_timeout``) and delete its files."""
        self._terminate()
        self._session.close()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        self.port = self.rpc_port = 0

    def __enter__(self) -> InfluxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines influxd wrote."""
        path = self.log_path
        if path is None or not path.exists():
            return ""
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 64 * 1024))
            text = log.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    # -- HTTP API --------------------------------------------------------------------------

    def query(
        self,
        q: str,
        db: str | None = None,
        params: dict[str, Any] | None = None,
        *,
        epoch: str | None = "ns",
        check: bool = True,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """POST ``q`` to /query (``params`` become InfluxQL bind parameters) and return the JSON.

        Times come back as integers in ``epoch`` units (None: RFC 3339 strings). Float fields
        arrive as JSON numbers in shortest round-trip form, so they compare ``==`` with what was
        written (integral floats come back as ``int``; ``-0.0`` keeps its sign). With ``check``,
        an HTTP error or an ``error`` in any statement's result raises InfluxServerError.
        """
        data: dict[str, str] = {"q": q}
        if db is not None:
            data["db"] = db
        if params:
            data["params"] = json.dumps(params)
        if epoch is not None:
            data["epoch"] = epoch
        answer = self._session.post(f"{self.url}/query", data=data, timeout=timeout)
        try:
            body: dict[str, Any] = json.loads(answer.text, parse_int=_int_or_negative_zero)
        except ValueError:
            body = {"error": answer.text}
        if check:
            errors = [body["error"]] if "error" in body else []
            errors += [r["error"] for r in body.get("results", []) if "error" in r]
            if answer.status_code >= 400 or errors:
                raise InfluxServerError(f"query {q!r} failed ({answer.status_code}): {errors}")
        return body

    def write(
        self, db: str, body: bytes, *, precision: str = "ns", timeout: float = 30.0
    ) -> requests.Response:
        """POST line protocol to /write?db=...; the response is returned unchecked."""
        return self._session.post(
            f"{self.url}/write",
            params={"db": db, "precision": precision},
            data=body,
            timeout=timeout,
        )

    def create_database(self, name: str) -> None:
        """CREATE DATABASE ``name`` (nothing happens if it exists)."""
        self.query(f"CREATE DATABASE {quote_identifier(name)}")

    def drop_database(self, name: str) -> None:
        """DROP DATABASE ``name`` (nothing happens if it does not exist)."""
        self.query(f"DROP DATABASE {quote_identifier(name)}")

    def series(self, q: str, db: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The rows of a one-statement query as dicts (column -> value), tags included."""
        rows: list[dict[str, Any]] = []
        for result in self.query(q, db=db, params=params)["results"]:
            for series in result.get("series", []):
                tags = series.get("tags", {})
                for values in series["values"]:
                    rows.append({**tags, **dict(zip(series["columns"], values, strict=True))})
        return rows


def quote_identifier(name: str) -> str:
    """An InfluxQL double-quoted identifier.

    >>> quote_identifier('a"b')
    '"a\\\\"b"'
    """
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
