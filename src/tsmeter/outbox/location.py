"""Where a network store's outbox lives by default: one file per store, named after it.

The name is a readable prefix (server, port, database) and a short hash of the store URL
without its credentials and transport settings: two databases, buckets, writers or state
files never share an outbox, while a new password or token, or another timeout, finds the
records the old one left.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["NETWORK_SCHEMES", "OUTBOX_OFF", "default_outbox_path", "outbox_disabled"]

#: stores behind a network: recording goes through an outbox unless told otherwise
NETWORK_SCHEMES = ("influxdb", "influxdbs", "influxdb2")

#: values of ``outbox=`` / ``$TSMETER_OUTBOX`` that mean "no outbox" (compared lower-cased)
OUTBOX_OFF = frozenset({"off", "none", "no", "false", "0"})

# query parameters that authenticate or tune the connection, not name where records go
_NOT_THE_STORE = frozenset({"token", "timeout", "retries", "password", "u", "p"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def outbox_disabled(value: object) -> bool:
    """Whether an ``outbox`` option says "no outbox": ``False`` or one of :data:`OUTBOX_OFF`."""
    return value is False or (isinstance(value, str) and value.strip().lower() in OUTBOX_OFF)


def default_outbox_path(url: str) -> Path | None:
    """The default outbox file of the store named by ``url``, or None for a store that keeps
    none by default (the embedded SQLite store writes to a local file already).

    The file is ``$XDG_DATA_HOME/tsmeter/outbox/<server>-<port>-<database>-<hash>.db``
    (``~/.local/share`` when ``$XDG_DATA_HOME`` is unset).

    Example::

        default_outbox_path("influxdb://u:pw@db.example:8086/metering?writer=web-1")
        # ~/.local/share/tsmeter/outbox/db.example-8086-metering-<10 hex digits>.db
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in NETWORK_SCHEMES:
        return None
    host = (parts.hostname or "").lower()
    try:
        port = str(parts.port or "")
    except ValueError:  # a port that is not a number: the store itself refuses the URL
        port = ""
    database = unquote(parts.path.lstrip("/"))
    query = sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                   if k not in _NOT_THE_STORE)  # fmt: skip
    # the URL without user, password and token: what the records are for
    identity = "\n".join([scheme, host, port, database, *(f"{k}={v}" for k, v in query)])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    prefix = _UNSAFE.sub("_", "-".join(p for p in (host, port, database) if p)).strip("._-")
    name = f"{prefix[:80]}-{digest}" if prefix else digest
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tsmeter" / "outbox" / f"{name}.db"
