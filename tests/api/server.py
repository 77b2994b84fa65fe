"""``tsmeter serve`` as a real process for the API tests: started as a user starts it
(``python -m tsmeter --store URL serve``) on a free loopback port, waited for on ``/readyz``
(or ``/healthz`` where the store is meant to be down), stopped by its PID with SIGTERM.

Example (server-free doctest)::

    with Served("sqlite:///usage.db", tmp_path, create=True) as server:
        requests.get(f"{server.url}/healthz")
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.influx_server import _die_with_parent, free_port

__all__ = ["ROOT", "Served"]

ROOT = Path(__file__).resolve().parents[2]


class Served:
    """One server process; ``url`` is its base URL once started."""

    def __init__(
        self,
        store: str,
        home: Path,
        *,
        create: bool = False,
        root_args: tuple[str, ...] = (),
        args: tuple[str, ...] = ("--no-auth",),
        wait_for: str = "/readyz",
    ) -> None:
        self.store = store
        self.home = home
        self.create = create
        self.root_args = root_args
        self.args = args
        self.wait_for = wait_for
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = home / f"serve-{id(self)}.log"
        self.http = requests.Session()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def start(self) -> Served:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TSMETER_")}
        env.update(XDG_DATA_HOME=str(self.home), PYTHONPATH=str(ROOT / "src"))
        self.port = free_port()
        argv = [sys.executable, "-m", "tsmeter", "--store", self.store,
                *(["--create"] if self.create else []), *self.root_args,
                "serve", "--port", str(self.port), *self.args]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, cwd=self.home, env=env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            preexec_fn=_die_with_parent)  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tsmeter serve exited early:\n{self.log_tail()}")
            try:
                if self.http.get(self.url + self.wait_for, timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tsmeter serve not ready in 30 s:\n{self.log_tail()}")

    def stop(self, signum: int = signal.SIGTERM) -> int | None:
        """``signum`` by PID (SIGTERM: a graceful stop, which may deliver the outbox for up
        to its close timeout), SIGKILL after 60 s; the exit status."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            os.kill(process.pid, signum)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        self.http.close()
        return process.returncode

    def __enter__(self) -> Served:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.http.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.http.post(self.url + path, timeout=60, **kw)

    def patch(self, path: str, **kw: Any) -> requests.Response:
        return self.http.patch(self.url + path, timeout=30, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.http.delete(self.url + path, timeout=30, **kw)
