"""``tsmeter health``: whether the store and the catalog's state store can be used now.

For healthchecks (docker-compose.yml's tsmeter service) and monitoring. A command that only
reads the metric catalog says nothing about an InfluxDB store: its catalog is a local SQLite
file, so it answers while InfluxDB is down. This one contacts every server the store URL
names, within one deadline: the state store (a PostgreSQL one is reached when the store
opens; a SQLite one is read), then the store itself (a ping where it has one, then a real
read, which also checks credentials and that the database or bucket exists). It records
nothing, opens no outbox and no PostHog mirror, and never creates an embedded store.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import click

from tsmeter.bootstrap import connect, resolve_store_url
from tsmeter.cli.context import CliState, pass_state
from tsmeter.cli.output import emit_one
from tsmeter.errors import StorageUnavailableError, TsmeterError

__all__ = ["health", "shown_url"]

_SECRET = re.compile(r"token|password|secret|key", re.IGNORECASE)


def shown_url(url: str) -> str:
    """``url`` with its password and secret-looking query values (token, password, ...) as
    ``***``, also inside a URL given as a query value (``state=postgresql://...``).

    >>> shown_url("influxdb://u:pw@db:8086/m?token=t0k&state=postgresql://a:b@pg/s")
    'influxdb://u:***@db:8086/m?token=***&state=postgresql://a:***@pg/s'
    >>> shown_url("sqlite:////var/lib/tsmeter/usage.db")
    'sqlite:////var/lib/tsmeter/usage.db'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a store URL that cannot be parsed)"
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        if ":" in user:
            netloc = f"{user.split(':', 1)[0]}:***@{host}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = [
        (key, "***" if _SECRET.search(key) else shown_url(value) if "://" in value else value)
        for key, value in pairs
    ]
    if netloc == parts.netloc and query == pairs:
        return url  # nothing to hide: as given (urlunsplit would drop sqlite:///'s empty host)
    text = urlencode(query, safe="*:/@")
    return urlunsplit((parts.scheme, netloc, parts.path, text, parts.fragment))


@dataclass
class _Run:
    """What the worker thread did so far: the step it is in, the checks passed, its error."""

    step: str = "starting"
    checks: list[dict[str, object]] = field(default_factory=list)
    error: BaseException | None = None

    def passed(self, check: str, detail: str, started: float) -> None:
        ms = round((time.monotonic() - started) * 1000, 1)
        self.checks.append({"check": check, "detail": detail, "ms": ms})


def _check(url: str | None, timezone: str | None, run: _Run) -> None:
    """Open the store and contact each server behind it; record the outcome in ``run``."""
    try:
        started = time.monotonic()
        run.step = "opening the store"
        meter = connect(url, timezone=timezone, outbox=False, mirror=False, create=False)
        try:
            run.step = "reading the metric catalog (the state store)"
            metrics = meter.list_metrics(all_orgs=True)
            run.passed("catalog", f"{len(metrics)} metric definitions read", started)
            started = time.monotonic()
            probe = meter.capabilities.probe
            if probe is not None:
                run.step = "pinging the store"
                if not probe.reachable():
                    raise StorageUnavailableError("the store's server does not answer a ping")
            run.step = "reading the store"
            now = datetime.now(UTC)
            meter.list_events(now - timedelta(minutes=1), now)
            detail = "answers a ping and a read" if probe is not None else "answers a read"
            run.passed("store", detail, started)
        finally:
            meter.close()
    except BaseException as exc:  # reported by the command, in one line
        run.error = exc


@click.command()
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds every check together may take; a store that has not answered by then is "
    "unhealthy.",
)
@pass_state
def health(state: CliState, timeout: float) -> None:
    """Check that the store and its state store answer now; exit 5 when either cannot be used.

    Contacts the servers: the state store of the metric catalog (SQLite file or PostgreSQL),
    then the store (InfluxDB: a ping, then a read of the database or bucket, which needs
    valid credentials). Records nothing and never creates an embedded store. For container
    healthchecks and monitoring; the exit status is 0 when healthy, 5 when the store or the
    state store is unreachable, refuses or is missing, 1 for a bad store URL.

    \b
    Example:
        tsmeter health
        tsmeter --store influxdb://127.0.0.1:8086/metering health --timeout 5
        tsmeter --format json health
    """
    run = _Run()
    worker = threading.Thread(
        target=_check, args=(state.store, state.timezone, run), name="tsmeter-health", daemon=True
    )
    worker.start()
    # the worker may block in a connect or a read; past the deadline it is left behind
    # (a daemon thread: it ends with the process, closing its meter if it gets an answer)
    worker.join(timeout)
    where = shown_url(resolve_store_url(state.store))
    if worker.is_alive():
        raise StorageUnavailableError(
            f"unhealthy: no answer within {timeout:g} s while {run.step} ({where})"
        )
    if run.error is not None:
        if isinstance(run.error, StorageUnavailableError):
            raise StorageUnavailableError(f"unhealthy: {run.step} ({where}): {run.error}") from None
        if isinstance(run.error, TsmeterError):
            raise run.error
        # anything else a server or a file threw that no adapter translated
        raise StorageUnavailableError(
            f"unhealthy: {run.step} ({where}): {type(run.error).__name__}: {run.error}"
        ) from None
    lines = [f"healthy: {where}"] + [
        f"  {c['check']}: {c['detail']} ({c['ms']} ms)" for c in run.checks
    ]
    emit_one(state, {"healthy": True, "store": where, "checks": run.checks},
             text="\n".join(lines))  # fmt: skip
