"""``tsmeter serve``: the HTTP API (see ``docs/api.md``) on uvicorn, over the store the root
options name.

It binds 127.0.0.1 by default; ``--no-auth`` (no API keys asked) is refused on any other
address. SIGINT or SIGTERM stop it gracefully: requests in progress finish, then the Meter
closes, which delivers what the outbox holds (for up to its close timeout; the rest stays in
the outbox file for the next process).
"""

from __future__ import annotations

import ipaddress
import signal
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
@pass_state
def serve(state: CliState, host: str, port: int, no_auth: bool) -> None:
    """Serve the HTTP API (/v1/...) over the store until SIGINT or SIGTERM.

    Requests carry an API key (Authorization: Bearer KEY) with the scope a route needs
    (ingest, read, admin); /healthz, /readyz and /metrics need none. Put TLS in a reverse
    proxy in front of it (docs/api.md).

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
    import uvicorn

    from tsmeter.api import ApiSettings, create_app
    from tsmeter.api.auth import Authenticator

    meter = state.meter()
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
    )
    server = uvicorn.Server(config)
    # uvicorn stops on SIGINT/SIGTERM and then raises the signal again to the handler it
    # found; a handler that does nothing lets this command return and close the Meter
    # (the outbox delivers) instead of dying by the signal
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stopped)
    click.echo(
        f"tsmeter serving on http://{host}:{port} "
        f"({'no auth' if no_auth else 'API keys required'})",
        err=True,
    )
    server.run()
    click.echo("tsmeter serve: stopped; closing the store", err=True)
