"""A real ``tsmeter serve`` process and a TCP proxy in front of it, for the client tests.

:class:`LiveServer` runs the server as a user does (``python -m tsmeter --store URL --create
serve --host 127.0.0.1 --port N --no-auth``) on an embedded store in a temporary directory,
waits until ``/readyz`` answers 200 and stops it by its PID.

:class:`TcpProxy` forwards bytes between a client and the server and misbehaves on request:
``drop_next(prefix)`` makes it forward the next request starting with ``prefix`` (so the
server does the work) and then close the client's connection instead of passing the answer
on (or after passing its headers on): the client sees a dropped connection after the server
stored what it sent. ``delay``
holds every request that long before forwarding it (a slow tsmeter server).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.influx_server import _die_with_parent, free_port

__all__ = ["LiveServer", "TcpProxy"]

ROOT = Path(__file__).resolve().parents[2]


class LiveServer:
    """``tsmeter serve`` on a free loopback port over ``store`` (default: the embedded store
    ``<directory>/s.db``); with ``auth``
    it wants API keys (see :meth:`create_key`), else it runs with ``--no-auth``."""

    def __init__(
        self,
        directory: Path,
        *,
        store: str | None = None,
        auth: bool = False,
        startup_timeout: float = 60.0,
    ) -> None:
        self.directory = Path(directory)
        self.auth = auth
        self.store = store or f"sqlite:///{self.directory / 's.db'}"
        self.log_path = self.directory / "serve.log"
        self.startup_timeout = startup_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment the server (and a tsmeter command on its store) runs in."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TSMETER_")}
        environ.update(PYTHONPATH=str(ROOT / "src"), XDG_DATA_HOME=str(self.directory))
        return environ

    def tsmeter(self, *args: str) -> str:
        """Run a tsmeter command on the server's store; its output."""
        done = subprocess.run(
            [sys.executable, "-m", "tsmeter", "--store", self.store, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def create_key(self, *scopes: str) -> str:
        """A new API key with ``scopes``, made by ``tsmeter apikey create`` on the store."""
        options = [arg for scope in scopes for arg in ("--scope", scope)]
        made = self.tsmeter("--format", "json", "apikey", "create", "test", *options)
        return str(json.loads(made)["key"])

    def start(self) -> LiveServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        argv = [sys.executable, "-m", "tsmeter", "--store", self.store, "--create", "serve"]
        argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        argv += [] if self.auth else ["--no-auth"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response,
            ):
                if response.status == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tsmeter serve did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


class TcpProxy:
    """A loopback TCP proxy in front of ``port`` (see the module docstring)."""

    def __init__(self, port: int, *, delay: float = 0.0) -> None:
        self.upstream = port
        self.delay = delay
        self.dropped = 0
        self._drop: list[tuple[bytes, bool]] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def drop_next(self, prefix: bytes, *, after_headers: bool = False) -> None:
        """Drop the answer to the next request that starts with ``prefix`` (with
        ``after_headers``: pass its status line and headers on, then hang up mid-body)."""
        with self._lock:
            self._drop.append((prefix, after_headers))

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream))
        drop = threading.Event()
        cut: list[bool] = []

        def requests() -> None:  # client -> server
            with contextlib.suppress(OSError):
                while data := client.recv(65536):
                    with self._lock:
                        for planned in self._drop:
                            if data.startswith(planned[0]):
                                self._drop.remove(planned)
                                cut[:] = [planned[1]]
                                drop.set()
                                break
                    if self.delay:
                        time.sleep(self.delay)
                    upstream.sendall(data)
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)

        threading.Thread(target=requests, daemon=True).start()
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if drop.is_set():  # the server has answered, so it did the work: hang up
                    with self._lock:
                        self.dropped += 1
                    if cut and cut[0]:
                        client.sendall(data[: data.find(b"\r\n\r\n") + 4])
                    break
                client.sendall(data)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
