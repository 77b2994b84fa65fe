"""Choosing adapters from configuration: the only place that does.

Store URLs:

* ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, a bare
  filesystem path, or ``sqlite:///:memory:`` — the embedded store.
* ``influxdb://[user:password@]host:port/DATABASE?writer=&token=&rp=&state=`` (and
  ``influxdbs://`` for HTTPS) — InfluxDB through its v1 API: 1.x, 2.x (compatibility
  API, ``token=``) or 3.x. Metric definitions and thresholds then live in a local
  state store: the SQLite file named by ``state=``, else the default file below.
* ``influxdb2://host:port/BUCKET?org=ORG&token=&https=&writer=&state=`` — InfluxDB 2.x
  through influxdb-client and Flux (token also from ``$TSMETER_INFLUXDB_TOKEN``); state
  as for ``influxdb://``.
* nothing: ``$TSMETER_STORE_URL``, else the default file
  ``$XDG_DATA_HOME/tsmeter/tsmeter.db`` (``~/.local/share/tsmeter/tsmeter.db``).

Files tsmeter creates (stores, state, outbox, logs) are 0600 and the directories it creates
for them 0700 (see :mod:`tsmeter.files`); existing ones keep their mode.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from tsmeter.errors import ValidationError
from tsmeter.metering.meter import Meter

__all__ = [
    "connect",
    "default_store_path",
    "migrate_state",
    "resolve_state_url",
    "resolve_store_url",
]

ENV_STORE_URL = "TSMETER_STORE_URL"
ENV_TIMEZONE = "TSMETER_TIMEZONE"
ENV_OUTBOX = "TSMETER_OUTBOX"
ENV_DURABILITY = "TSMETER_DURABILITY"
ENV_STATE_URL = "TSMETER_STATE_URL"


def default_store_path() -> Path:
    """Where the embedded store lives when nothing else is configured."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tsmeter" / "tsmeter.db"


def resolve_store_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ``$TSMETER_STORE_URL``, else the default file."""
    return url or os.environ.get(ENV_STORE_URL) or f"sqlite:///{default_store_path()}"


def _sqlite_path(url: str) -> str | None:
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :] or None
    if "://" not in url:
        return url
    return None


def connect(
    url: str | None = None,
    *,
    timezone: str | None = None,
    mirror: bool | None = None,
    **options: Any,
) -> Meter:
    """Open a :class:`~tsmeter.metering.meter.Meter` on the store named by ``url``.

    ``timezone`` (default ``$TSMETER_TIMEZONE`` or UTC) is the IANA zone that
    periods are computed in. ``outbox=PATH`` (default ``$TSMETER_OUTBOX``) puts a durable
    outbox in front of the store (see :mod:`tsmeter.outbox.durable`), with ``durability`` "outbox"
    (``record`` returns once the record is committed to the outbox file; the default) or
    "memory" (at once; default ``$TSMETER_DURABILITY``). ``mirror`` (default: when
    ``$TSMETER_POSTHOG_API_KEY`` is set) attaches the PostHog mirror as ``meter.mirror``.
    Other options go to the Meter (``chunk_size``, ``outbox_options``).

    Example::

        with tsmeter.connect("sqlite:///usage.db", timezone="Europe/Paris") as meter:
            meter.record("api_calls", "org", "org-1")
    """
    resolved = resolve_store_url(url)
    tz = timezone or os.environ.get(ENV_TIMEZONE) or "UTC"
    if options.get("outbox") is None and os.environ.get(ENV_OUTBOX):
        options["outbox"] = os.environ[ENV_OUTBOX]
    if "durability" not in options and os.environ.get(ENV_DURABILITY):
        options["durability"] = os.environ[ENV_DURABILITY]
    from tsmeter.adapters.sqlite import SQLiteStore

    if resolved.startswith(("influxdb://", "influxdbs://", "influxdb2://")):
        from tsmeter.adapters.influxdb.client import InfluxV1Config
        from tsmeter.adapters.influxdb.store import InfluxStore
        from tsmeter.adapters.influxdb.v2client import InfluxV2Config

        named = (
            InfluxV2Config.from_url(resolved).state
            if resolved.startswith("influxdb2://")
            else InfluxV1Config.from_url(resolved).state
        )
        state = named or str(default_store_path())
        usage = InfluxStore.from_url(resolved, ledger=state)
        try:
            catalog = SQLiteStore(state)
        except BaseException:
            usage.close()
            raise
        wired = replace(usage.capabilities(), state_path=catalog.path)
        try:
            meter = Meter(usage, catalog, timezone=tz, capabilities=wired, **options)
            return _integrate(meter, mirror)
        except BaseException:
            usage.close()
            catalog.close()
            raise
    path = _sqlite_path(resolved)
    if path is None:
        scheme = resolved.split("://", 1)[0]
        raise ValidationError(
            "url",
            f"unsupported store scheme {scheme!r} (supported: sqlite:///PATH, a path,"
            " influxdb://HOST:PORT/DATABASE, influxdb2://HOST:PORT/BUCKET?org=ORG)",
        )
    store = SQLiteStore(path)
    try:
        meter = Meter(store, store, timezone=tz, capabilities=store.capabilities(), **options)
        return _integrate(meter, mirror)
    except BaseException:
        store.close()
        raise


def _integrate(meter: Meter, mirror: bool | None) -> Meter:
    """Attach what the environment configures: the PostHog mirror when
    ``$TSMETER_POSTHOG_API_KEY`` is set (see :mod:`tsmeter.integrations.posthog`), shut down on
    close;
    ``mirror=False`` never, ``mirror=True`` or an error naming the missing setting."""
    if mirror is False:
        return meter
    from tsmeter.integrations.posthog.settings import PostHogSettings

    settings = PostHogSettings.from_env()
    if mirror and not settings.enabled:
        meter.close()
        raise ValidationError("TSMETER_POSTHOG_API_KEY", "is required for the PostHog mirror")
    if settings.enabled:
        from tsmeter.integrations.posthog.mirror import PostHogMirror

        try:
            attached = PostHogMirror(settings, meter)
        except BaseException:
            meter.close()
            raise
        meter.mirror = attached
        meter.on_close(lambda: attached.shutdown(timeout=10.0))
    return meter


def resolve_state_url(url: str | None = None) -> str | None:
    """The PostgreSQL state store a store URL names: its ``state=`` when that is a
    ``postgresql://`` URL, else ``$TSMETER_STATE_URL``; None for a local (SQLite) state."""
    resolved = resolve_store_url(url)
    named: str | None = None
    if resolved.startswith(("influxdb://", "influxdbs://")):
        from tsmeter.adapters.influxdb.client import InfluxV1Config

        named = InfluxV1Config.from_url(resolved).state
    elif resolved.startswith("influxdb2://"):
        from tsmeter.adapters.influxdb.v2client import InfluxV2Config

        named = InfluxV2Config.from_url(resolved).state
    if named and named.startswith(("postgresql://", "postgres://")):
        return named
    return os.environ.get(ENV_STATE_URL) or None


def migrate_state(url: str, *, dry_run: bool = False) -> tuple[list[str], list[str]]:
    """Bring the PostgreSQL state store at ``url`` up to this version's schema (``tsmeter
    state migrate``): (migrations applied now, migrations already applied), each as
    ``"NNNN name"``; with ``dry_run``, what would be applied, applying nothing."""
    from tsmeter.adapters.postgres.database import StateDatabase
    from tsmeter.adapters.postgres.migrations import MIGRATIONS

    db = StateDatabase(url, migrate=False, max_size=1)
    try:
        with db.transaction() as conn:
            from tsmeter.adapters.postgres.migrations import applied, check, migrate

            before = applied(conn)
            pending = check(conn, db.where)
            done = pending if dry_run else migrate(conn, db.where)
    finally:
        db.close()
    names = {m.version: f"{m.version:04d} {m.name}" for m in MIGRATIONS}
    return [names[m.version] for m in done], [names.get(v, f"{v:04d} {n}")
                                              for v, n in sorted(before.items())]  # fmt: skip
