"""Choosing adapters from configuration: the only place that does.

Store URLs:

* ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, a bare
  filesystem path, or ``sqlite:///:memory:`` — the embedded store.
* nothing: ``$TSMETER_STORE_URL``, else the default file
  ``$XDG_DATA_HOME/tsmeter/tsmeter.db`` (``~/.local/share/tsmeter/tsmeter.db``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tsmeter.errors import ValidationError
from tsmeter.service import Meter

__all__ = ["connect", "default_store_path", "resolve_store_url"]

ENV_STORE_URL = "TSMETER_STORE_URL"
ENV_TIMEZONE = "TSMETER_TIMEZONE"


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


def connect(url: str | None = None, *, timezone: str | None = None, **options: Any) -> Meter:
    """Open a :class:`~tsmeter.service.Meter` on the store named by ``url``.

    ``timezone`` (default ``$TSMETER_TIMEZONE`` or UTC) is the IANA zone that
    periods are computed in. Other options go to the Meter (``chunk_size``).

    Example::

        with tsmeter.connect("sqlite:///usage.db", timezone="Europe/Paris") as meter:
            meter.record("api_calls", "org", "org-1")
    """
    resolved = resolve_store_url(url)
    tz = timezone or os.environ.get(ENV_TIMEZONE) or "UTC"
    path = _sqlite_path(resolved)
    if path is None:
        scheme = resolved.split("://", 1)[0]
        raise ValidationError(
            "url", f"unsupported store scheme {scheme!r} (supported: sqlite:///PATH or a path)"
        )
    from tsmeter.adapters.embedded import SQLiteStore

    store = SQLiteStore(path)
    try:
        return Meter(store, store, timezone=tz, **options)
    except BaseException:
        store.close()
        raise
