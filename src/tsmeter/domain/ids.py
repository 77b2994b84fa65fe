"""Record ids: time-ordered UUIDs (version 7 layout), so new ids append to indexes."""

from __future__ import annotations

import os
import time

__all__ = ["new_id", "new_ids"]

_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_COUNTER_BITS = 20


def new_ids(count: int) -> list[str]:
    """Return ``count`` fresh UUIDv7 strings, ascending within the call.

    Layout (RFC 9562, "fixed-length dedicated counter"): 48-bit Unix
    milliseconds, version 7, 54 random bits drawn once per call, the variant,
    and a 20-bit counter in the lowest bits, so a batch costs one format per id.

    >>> a, b = new_ids(2)
    >>> a < b and len(a) == 36 and a[14] == "7"
    True
    """
    ids: list[str] = []
    while len(ids) < count:
        n = min(count - len(ids), 1 << _COUNTER_BITS)
        ms = f"{(time.time_ns() // 1_000_000) & 0xFFFF_FFFF_FFFF:012x}"
        r = os.urandom(7).hex()
        head = f"{ms[:8]}-{ms[8:]}-7{r[0:3]}-{_VARIANT[r[3]]}{r[4:7]}-{r[7:14]}"
        ids += [f"{head}{i:05x}" for i in range(n)]
    return ids


def new_id() -> str:
    """Return one fresh UUIDv7 string.

    >>> len(new_id())
    36
    """
    return new_ids(1)[0]
