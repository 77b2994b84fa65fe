"""Webhook signatures: how tsmeter signs a request and how a receiver checks it.

The signature is ``sha256=`` followed by the hex HMAC-SHA256, keyed with the shared
secret, of ``"{timestamp}.{body}"``: the ``X-Tsmeter-Timestamp`` header (Unix seconds),
a dot, and the raw request body. Signing the timestamp with the body lets a receiver
reject a captured request that is replayed later (see :func:`verify_signature`).

>>> header = sign("s3cret", b'{"event":"threshold.exceeded"}', 1767225600)
>>> header[:7]
'sha256='
>>> verify_signature("s3cret", b'{"event":"threshold.exceeded"}', "1767225600", header,
...                  now=1767225630)
True
>>> verify_signature("s3cret", b'{"event":"threshold.exceeded"}', "1767225600", header,
...                  now=1767229200)   # an hour later: a replay
False
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["sign", "verify_signature"]

PREFIX = "sha256="


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def sign(secret: str | bytes, body: str | bytes, timestamp: int) -> str:
    """The ``X-Tsmeter-Signature`` value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    message = str(int(timestamp)).encode("ascii") + b"." + _bytes(body)
    return PREFIX + hmac.new(_bytes(secret), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str | bytes,
    body: str | bytes,
    timestamp: str | int,
    signature: str,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """Whether a webhook request is genuine and fresh.

    ``body`` is the raw request body exactly as received (not re-serialised JSON),
    ``timestamp`` the ``X-Tsmeter-Timestamp`` header and ``signature`` the
    ``X-Tsmeter-Signature`` header. False when the signature does not match (compared in
    constant time) or when the timestamp is more than ``tolerance`` seconds away from
    ``now`` (default: the current time): an old request replayed by someone who captured
    it is rejected. To stop replays within the window too, remember the
    ``X-Tsmeter-Delivery`` ids you have processed (a retry reuses the id).

    Example: ``verify_signature(SECRET, request.body, request.headers["X-Tsmeter-Timestamp"],
    request.headers["X-Tsmeter-Signature"])``.
    """
    try:
        sent = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance:
        return False
    expected = sign(secret, body, sent)
    return hmac.compare_digest(expected.encode("ascii"), signature.strip().encode("utf-8"))
