"""Choosing adapters from configuration: the only place that does.

Store URLs:

* ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, a bare
  filesystem path, or ``sqlite:///:memory:`` — the embedded store.
* ``influxdb://[user:password@]host:port/DATABASE?writer=&token=&rp=&state=`` (and
  ``influxdbs://`` for HTTPS) — InfluxDB through its v1 API: 1.x, 2.x (compatibility
  API, ``token=``) or 3.x. Metric definitions and thresholds then live in a state
  store: ``state=postgresql://...`` (or ``$TSMETER_STATE_URL``) for one a fleet shares, a
  SQLite file named by ``state=``, else a file of this server and database beside the
  default file below (:func:`default_state_path`).
* ``influxdb2://host:port/BUCKET?org=ORG&token=&https=&writer=&state=`` — InfluxDB 2.x
  through influxdb-client and Flux (token also from ``$TSMETER_INFLUXDB_TOKEN``); state
  as for ``influxdb://``.
* nothing: ``$TSMETER_STORE_URL``, else the default file
  ``$XDG_DATA_HOME/tsmeter/tsmeter.db`` (``~/.local/share/tsmeter/tsmeter.db``).

An embedded store's file is created when missing unless ``connect(..., create=False)``
(what the CLI passes without ``--create``, except for the default file); an existing file
that is not a tsmeter store is refused either way, never given tsmeter's tables.

Files tsmeter creates (stores, state, outbox, logs) are 0600 and the directories it creates
for them 0700 (see :mod:`tsmeter.files`); existing ones keep their mode.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

from tsmeter.errors import StorageUnavailableError, ValidationError
from tsmeter.extras import needs
from tsmeter.metering.meter import Meter

__all__ = [
    "check_store_file",
    "connect",
    "default_state_path",
    "default_store_path",
    "is_default_store",
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


def default_state_path(target: str) -> str:
    """The local state file of a server store without ``state=``: one per server and database
    (``target``: the base URL and database, without credentials), so two databases never
    share metric definitions or ids. A store that an earlier version served from the single
    default file (its ids are there) keeps that file.

    >>> Path(default_state_path("http://127.0.0.1:8086/metering")).name[:30]
    'state-127.0.0.1-8086-metering-'
    """
    legacy = default_store_path()
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", target.split("://", 1)[-1]).strip("-")[:60]
    digest = hashlib.sha256(target.encode()).hexdigest()[:12]
    path = legacy.parent / "state" / f"state-{readable}-{digest}.db"
    if not path.exists() and _served_by(legacy, target):
        return str(legacy)
    return str(path)


def _served_by(legacy: Path, target: str) -> bool:
    """Whether the single default state file of earlier versions holds ids sent to
    ``target`` (read only; any doubt is a no)."""
    if not legacy.is_file():
        return False
    try:
        conn = sqlite3.connect(f"file:{legacy}?mode=ro", uri=True, timeout=5)
        try:
            found = conn.execute(
                "SELECT 1 FROM influx_targets WHERE target = ?", (target,)
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return found is not None


def resolve_store_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ``$TSMETER_STORE_URL``, else the default file."""
    return url or os.environ.get(ENV_STORE_URL) or f"sqlite:///{default_store_path()}"


def is_default_store(url: str | None = None) -> bool:
    """Whether ``url`` (None: not given) leaves the store to the default file: neither the
    argument nor ``$TSMETER_STORE_URL`` names one."""
    return not url and not os.environ.get(ENV_STORE_URL)


#: the first bytes of every SQLite database file
_SQLITE_HEADER = b"SQLite format 3\x00"


def check_store_file(path: str, *, create: bool) -> None:
    """Refuse an embedded store file that cannot be meant: a missing one unless ``create``,
    and an existing file that is not a tsmeter store (not SQLite, or a SQLite database of
    something else), which tsmeter must not add its tables to. An empty file is a new store.

    >>> check_store_file("/nonexistent/usage.db", create=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    tsmeter.errors.StorageUnavailableError: no store at '/nonexistent/usage.db': check the path...
    """
    if path == ":memory:":
        return
    file = Path(path).expanduser()
    if not file.exists():
        if create:
            return
        raise StorageUnavailableError(
            f"no store at {path!r}: check the path, or ask for a new store "
            "(tsmeter --create, or connect(..., create=True))"
        )
    if file.is_dir():
        raise StorageUnavailableError(f"store {path!r} is a directory, not a store file")
    try:
        with file.open("rb") as fh:
            header = fh.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StorageUnavailableError(f"cannot read store {path!r}: {exc.strerror}") from exc
    if not header:
        return  # an empty file: SQLite makes it a new database
    if header != _SQLITE_HEADER:
        raise StorageUnavailableError(
            f"{path!r} is not a tsmeter store: it is not a SQLite database"
        )
    tables = _tables(file)
    if tables and "meta" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StorageUnavailableError(
            f"{path!r} is not a tsmeter store: it is a SQLite database of something else "
            f"(tables {shown}); tsmeter leaves it as it is"
        )


def _tables(file: Path) -> set[str]:
    """The table names of a SQLite file, read only (empty when it cannot be read: opening
    the store then reports why)."""
    try:
        conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return set()
    return {str(name) for (name,) in rows}


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
    create: bool = True,
    **options: Any,
) -> Meter:
    """Open a :class:`~tsmeter.metering.meter.Meter` on the store named by ``url``.

    ``timezone`` (default ``$TSMETER_TIMEZONE`` or UTC) is the IANA zone that
    periods are computed in. ``outbox=PATH`` (default ``$TSMETER_OUTBOX``) puts a durable
    outbox in front of the store (see :mod:`tsmeter.outbox.durable`); a network store
    (InfluxDB) has one by default, in its own file (see
    :func:`tsmeter.outbox.location.default_outbox_path`), unless ``outbox=False`` (or
    ``$TSMETER_OUTBOX=off``); the embedded store has none unless given a path. ``durability``
    is "outbox" (``record`` returns once the record is committed to the outbox file; the
    default) or "memory" (at once; default ``$TSMETER_DURABILITY``). ``mirror`` (default: when
    ``$TSMETER_POSTHOG_API_KEY`` is set) attaches the PostHog mirror as ``meter.mirror``.
    ``create=False`` refuses an embedded store whose file does not exist (a
    :class:`~tsmeter.errors.StorageUnavailableError`) instead of creating it; a file that is
    not a tsmeter store is refused either way. Other options go to the Meter (``chunk_size``,
    ``outbox_options``).

    Example::

        with tsmeter.connect("sqlite:///usage.db", timezone="Europe/Paris") as meter:
            meter.record("api_calls", "org", "org-1")
    """
    resolved = resolve_store_url(url)
    tz = timezone or os.environ.get(ENV_TIMEZONE) or "UTC"
    options["outbox"] = _outbox_option(resolved, options.get("outbox"))
    if "durability" not in options and os.environ.get(ENV_DURABILITY):
        options["durability"] = os.environ[ENV_DURABILITY]
    from tsmeter.adapters.sqlite import SQLiteStore

    if resolved.startswith(("influxdb://", "influxdbs://", "influxdb2://")):
        with needs("influxdb"):
            from tsmeter.adapters.influxdb.client import InfluxV1Config
            from tsmeter.adapters.influxdb.store import InfluxStore
            from tsmeter.adapters.influxdb.v2client import InfluxV2Config

        if resolved.startswith("influxdb2://"):
            config2 = InfluxV2Config.from_url(resolved)
            named, target = config2.state, f"{config2.base_url}/{config2.org}/{config2.bucket}"
        else:
            config1 = InfluxV1Config.from_url(resolved)
            named, target = config1.state, f"{config1.base_url}/{config1.database}"
        shared = named if is_state_url(named) else None if named else os.environ.get(ENV_STATE_URL)
        if shared:
            return _connect_fleet(resolved, shared, target, tz, mirror, options)
        state = named or default_state_path(target)
        usage = InfluxStore.from_url(resolved, ledger=state)
        try:
            catalog = SQLiteStore(state)
        except BaseException:
            usage.close()
            raise
        wired = replace(usage.capabilities(), state_path=catalog.path, keys=catalog,
                        dimension_values=catalog)  # fmt: skip
        try:
            usage.know_metrics(catalog.list_metrics())  # precisions of points not converted
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
    check_store_file(path, create=create)
    store = SQLiteStore(path)
    try:
        meter = Meter(store, store, timezone=tz, capabilities=store.capabilities(), **options)
        return _integrate(meter, mirror)
    except BaseException:
        store.close()
        raise


def _outbox_option(url: str, outbox: object) -> str | None:
    """The outbox file for the store at ``url``: the ``outbox`` option, else ``$TSMETER_OUTBOX``,
    else the store's default (a network store's own file; none for the embedded store);
    ``False`` or "off" there means none."""
    from tsmeter.outbox.location import default_outbox_path, outbox_disabled

    if outbox is None:
        outbox = os.environ.get(ENV_OUTBOX) or None
    if outbox_disabled(outbox):
        return None
    if outbox is None or outbox is True:
        default = default_outbox_path(url)
        if default is None and outbox is True:
            raise ValidationError("outbox", "the embedded store has no default outbox: give a path")
        return str(default) if default is not None else None
    if not isinstance(outbox, str | os.PathLike):
        raise ValidationError("outbox", f"must be a path, True or False, got {outbox!r}")
    return os.fspath(outbox)


def is_state_url(url: str | None) -> bool:
    """Whether ``url`` names a PostgreSQL state store (else a SQLite file); the schemes are
    those of ``tsmeter.adapters.postgres.database.SCHEMES``, which needs psycopg to import."""
    return bool(url) and str(url).startswith(("postgresql://", "postgres://"))


def _connect_fleet(
    url: str, state_url: str, target: str, tz: str, mirror: bool | None, options: dict[str, Any]
) -> Meter:
    """A Meter on a server store whose state a fleet shares on PostgreSQL: the catalog, the
    id ledger, the notification deliveries and the job leases; what stays per host (the
    outbox, the PostHog journal) in the local state file of the store."""
    from tsmeter.adapters.influxdb.store import InfluxStore

    with needs("postgres"):
        from tsmeter.adapters.postgres.catalog import PostgresCatalog
        from tsmeter.adapters.postgres.database import StateDatabase
        from tsmeter.adapters.postgres.dedupe import PostgresDedupe
        from tsmeter.adapters.postgres.deliveries import PostgresDeliveryLog
        from tsmeter.adapters.postgres.dimensions import PostgresDimensionValues
        from tsmeter.adapters.postgres.keys import PostgresKeys
        from tsmeter.adapters.postgres.leases import PostgresLeases

    db = StateDatabase(state_url)
    try:
        usage = InfluxStore.from_url(url, dedupe=lambda named: PostgresDedupe(db, named))
    except BaseException:
        db.close()
        raise
    catalog = PostgresCatalog(db)
    wired = replace(usage.capabilities(), state_path=default_state_path(target),
                    deliveries=PostgresDeliveryLog(db), leases=PostgresLeases(db),
                    keys=PostgresKeys(db),
                    dimension_values=PostgresDimensionValues(db))  # fmt: skip
    try:
        usage.know_metrics(catalog.list_metrics())  # precisions of points not converted
        meter = Meter(usage, catalog, timezone=tz, capabilities=wired, **options)
    except BaseException:
        usage.close()
        catalog.close()
        db.close()
        raise
    meter.on_close(db.close)  # after the outbox delivered, before the store closes
    return _integrate(meter, mirror)


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
            with needs("posthog"):
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
    if named:  # an explicit state: shared, or a local file
        return named if is_state_url(named) else None
    return os.environ.get(ENV_STATE_URL) or None


def migrate_state(url: str, *, dry_run: bool = False) -> tuple[list[str], list[str]]:
    """Bring the PostgreSQL state store at ``url`` up to this version's schema (``tsmeter
    state migrate``): (migrations applied now, migrations already applied), each as
    ``"NNNN name"``; with ``dry_run``, what would be applied, applying nothing."""
    with needs("postgres"):
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
