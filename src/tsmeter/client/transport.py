"""HTTP details both clients share: headers, and which failures leave a request unsent."""

from __future__ import annotations

from typing import Any

import httpx

from tsmeter import __version__
from tsmeter.client._protocol import Call
from tsmeter.errors import StorageUnavailableError

__all__ = ["NEVER_SENT", "headers", "unreachable"]

#: failures before the request left: sending it again cannot do anything twice
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def headers(api_key: str | None) -> dict[str, str]:
    """Headers of every request: the key (never logged by the client), JSON, who asks."""
    out = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "User-Agent": f"tsmeter-client/{__version__}",
    }
    if api_key is not None:
        out["Authorization"] = f"Bearer {api_key}"
    return out


def unreachable(call: Call[Any], exc: httpx.TransportError) -> StorageUnavailableError:
    """The error for a request that got no answer; for a call that is not safe to repeat it
    says that the server may have done it."""
    maybe = "" if call.idempotent or isinstance(exc, NEVER_SENT) else " (it may have been done)"
    kind = type(exc).__name__
    return StorageUnavailableError(
        f"{call.method} {call.path}: no answer from the tsmeter server{maybe}: {kind}: {exc}"
    )
