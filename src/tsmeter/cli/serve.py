"""``tsmeter serve``: the HTTP API (see ``docs/api.md``) on uvicorn, over the store the root
options name.

It binds 127.0.0.1 by default; ``--no-auth`` (no API keys asked) is refused on any other
address. SIGINT or SIGTERM stop it gracefully: requests in progress finish, then the Meter
closes, which delivers what the outbox holds (for up to its close timeout; the rest stays in
the outbox file for the next process).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import signal
import socket
import sys
from types import FrameType

import click

from tsmeter.cli.context import CliState, pass_state
from tsmeter.extras import require

__all__ = ["is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``).

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _stopped(signum: int, frame: FrameType | None) -> None:
    """The signal uvicorn raises again once it has stopped: nothing more to do."""


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (anything but loopback needs API keys: no --no-auth).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="TCP port to listen on.",
)
@click.option(
    "--no-auth", is_flag=True, help="Ask for no API key (local development; refused off loopback)."
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes serving the one port, each with its own Meter on the store.",
)
@pass_state
def serve(state: CliState, host: str, port: int, no_auth: bool, workers: int) -> None:
    """Serve the HTTP API (/v1/...) over the store until SIGINT or SIGTERM.

    Requests carry an API key (Authorization: Bearer KEY) with the scope a route needs
    (ingest, read, admin); /healthz, /readyz and /metrics need none. Put TLS in a reverse
    proxy in front of it (docs/api.md). With --workers N, N processes share the port (the
    kernel spreads connections); each stops gracefully when this one is told to stop.

    \b
    Example:
        tsmeter --store usage.db serve --port 8080
        tsmeter --store usage.db --create serve --no-auth
    """
    if no_auth and not is_loopback(host):
        raise click.UsageError(
            f"--no-auth serves anyone who can reach {host!r}: use it on 127.0.0.1 only",
        )
    require("api")
    shown = f"http://{host}:{port} ({'no auth' if no_auth else 'API keys required'})"
    if workers == 1:
        click.echo(f"tsmeter serving on {shown}", err=True)
        _run(state, host, port, no_auth, None)
        click.echo("tsmeter serve: stopped; closing the store", err=True)
        return
    state.meter()  # the store is opened (and created with --create) once, before the fork
    state.close()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host.strip("[]"), port), family=family, backlog=2048)
    click.echo(f"tsmeter serving on {shown} with {workers} workers", err=True)
    children = [_fork(state, listener, host, port, no_auth) for _ in range(workers)]
    listener.close()
    failed = _supervise(children)
    click.echo("tsmeter serve: workers stopped", err=True)
    if failed:
        raise click.ClickException(f"{failed} of {workers} workers failed (see above)")


def _run(state: CliState, host: str, port: int, no_auth: bool, sock: socket.socket | None) -> None:
    """Serve on uvicorn until SIGINT or SIGTERM, then return (the caller closes the Meter)."""
    import uvicorn

    from tsmeter.api import ApiSettings, create_app
    from tsmeter.api.auth import Authenticator

    meter = state.meter()
    if not no_auth and meter.api_keys is None:  # never serve without keys by accident
        raise click.ClickException(
            "this store keeps no API keys, so requests could not be checked: use a store with"
            " a state file or a PostgreSQL state store, or --no-auth on loopback"
        )
    authenticator = Authenticator(None if no_auth else meter.api_keys)
    app = create_app(meter, authenticator=authenticator, settings=ApiSettings())
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=30,
        # longer than clients' and proxies' own idle timeouts (httpx 5 s, nginx 60 s), so a
        # pooled connection is closed by the client, never under a request it just sent
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    # uvicorn stops on SIGINT/SIGTERM and then raises the signal again to the handler it
    # found; a handler that does nothing lets this command return and close the Meter
    # (the outbox delivers) instead of dying by the signal
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stopped)
    server.run(sockets=None if sock is None else [sock])


def _fork(state: CliState, listener: socket.socket, host: str, port: int, no_auth: bool) -> int:
    """Start one worker process on ``listener``; its PID."""
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        # its own process group: a terminal's Ctrl-C reaches the parent alone, which passes
        # one SIGTERM on (a second signal would make uvicorn skip the graceful stop)
        os.setpgid(0, 0)
        _die_with_parent()
        _run(state, host, port, no_auth, listener)
        state.close()
        status = 0
    except BaseException as exc:  # the worker's last word: the parent reports the failure
        click.echo(f"tsmeter serve: worker {os.getpid()} failed: {exc}", err=True)
    finally:
        sys.stderr.flush()
        os._exit(status)


def _die_with_parent() -> None:
    """Ask Linux to send this worker SIGTERM if the parent dies (elsewhere: nothing)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _supervise(children: list[int]) -> int:
    """Pass SIGINT and SIGTERM on to the workers as SIGTERM, wait for all of them; how many
    failed (a worker that stops on its own makes the others stop too)."""
    running = set(children)

    def stop(signum: int, frame: FrameType | None) -> None:
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    failed = 0
    while running:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        running.discard(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            failed += 1
        stop(signal.SIGTERM, None)
    return failed
