"""HTTP details both clients share: headers, and which failures leave a request unsent."""

from __future__ import annotations

from typing import Any

import httpx

from tsmeter import __version__
from tsmeter.client._protocol import Call
from tsmeter.errors import StorageUnavailableError

__all__ = ["NEVER_SENT", "headers", "retryable", "unreachable"]

#: failures before the request left: sending it again cannot do anything twice
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def headers(api_key: str | None) -> dict[str, str]:
    """Headers of every request: the key (never logged by the client), JSON, who asks."""
    out = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "User-Agent": f"tsmeter-client/{__version__}",
    }
    if api_key:  # None or empty: a server run with --no-auth
        out["Authorization"] = f"Bearer {api_key}"
    return out


def retryable(call: Call[Any], exc: httpx.TransportError) -> bool:
    """Whether a request that failed with ``exc`` may be sent again: not one httpx refused
    to send (a header it cannot encode fails the same way again); one that never left, or
    one that is safe to repeat."""
    if isinstance(exc, httpx.LocalProtocolError):
        return False
    return call.idempotent or isinstance(exc, NEVER_SENT)


def unreachable(call: Call[Any], exc: httpx.TransportError) -> StorageUnavailableError:
    """The error for a request that got no answer; for a call that is not safe to repeat it
    says that the server may have done it."""
    kind = type(exc).__name__
    if isinstance(exc, httpx.LocalProtocolError):
        return StorageUnavailableError(f"{call.method} {call.path}: cannot be sent: {kind}: {exc}")
    maybe = "" if call.idempotent or isinstance(exc, NEVER_SENT) else " (it may have been done)"
    return StorageUnavailableError(
        f"{call.method} {call.path}: no answer from the tsmeter server{maybe}: {kind}: {exc}"
    )
