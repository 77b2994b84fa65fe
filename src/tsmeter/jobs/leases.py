"""Keeping the scheduler's leader lease (:class:`tsmeter.ports.JobLeases`) in a thread.

A :class:`LeaseKeeper` calls ``acquire`` every ``ttl / 3``: the holder renews, the others try
to take the lease over. It holds the lease, as far as this process is concerned, until
``ttl`` after the start of its last successful call (measured on the monotonic clock, so the
process gives it up no later than the lease store expires it). A holder whose renewals fail
(the lease store is unreachable) stops starting runs when that time passes, and takes the
lease back, or not, at the next try.

The takeover bound: a holder that dies renewed at most ``ttl`` before its lease expires, and
the others try every ``ttl / 3``, so another holds the lease at most ``ttl + ttl / 3`` after
the death (plus the time of one call to the lease store).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

from tsmeter.errors import ValidationError
from tsmeter.ports import JobLeases

__all__ = ["DEFAULT_LEASE_TTL", "LeaseKeeper", "default_holder"]

#: seconds a lease lives without renewal: a dead scheduler's jobs move within 40 s
DEFAULT_LEASE_TTL = 30.0

logger = logging.getLogger("tsmeter.scheduler")


def default_holder() -> str:
    """A name for this scheduler, unique across the fleet: host, process id and a random tag
    (a restarted process with a recycled pid is still someone else)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class LeaseKeeper:
    """Takes and renews ``leases`` for ``holder`` every ``ttl / 3`` seconds in a thread.

    ``on_acquired`` is called (in the keeper's thread) each time the lease is taken, not on
    renewals. Example::

        keeper = LeaseKeeper(leases, 30.0, on_acquired=catch_up)
        keeper.start()
        if keeper.holds(): ...
        keeper.stop(release=True)
    """

    def __init__(
        self,
        leases: JobLeases,
        ttl: float = DEFAULT_LEASE_TTL,
        *,
        holder: str | None = None,
        on_acquired: Callable[[], object] | None = None,
    ) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
            raise ValidationError("lease_ttl", f"must be a number of seconds, got {ttl!r}")
        if ttl <= 0:
            raise ValidationError("lease_ttl", f"must be positive, got {ttl!r}")
        self.leases = leases
        self.ttl = float(ttl)
        self.interval = self.ttl / 3
        self.holder = holder or default_holder()
        self._on_acquired = on_acquired
        self._lock = threading.Lock()
        self._held_until = 0.0  # monotonic
        self._holding = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holds(self) -> bool:
        """Whether this process may act as the holder right now."""
        with self._lock:
            return time.monotonic() < self._held_until

    def attempt(self) -> bool:
        """One call to ``acquire`` (take or renew); whether the lease is held after it. An
        unreachable lease store is logged and leaves the hold to run out."""
        started = time.monotonic()
        try:
            held = self.leases.acquire(self.holder, self.ttl)
        except Exception as exc:  # a keeper thread: log, keep trying
            logger.warning(
                "lease: cannot renew or acquire (%s: %s); holding it for %.1fs more at most",
                type(exc).__name__,
                " ".join(str(exc).split()),
                max(0.0, self._held_until - time.monotonic()),
            )
            return self._update(None, started)
        return self._update(held, started)

    def _update(self, held: bool | None, started: float) -> bool:
        """Record the outcome of a call begun at ``started`` (None: it failed)."""
        with self._lock:
            if held:
                self._held_until = started + self.ttl
            elif held is False:
                self._held_until = 0.0
            now_holds = time.monotonic() < self._held_until
            was = self._holding
            self._holding = now_holds
        if now_holds and not was:
            logger.info("lease acquired: %s runs the jobs", self.holder)
            if self._on_acquired is not None:
                try:
                    self._on_acquired()
                except Exception:
                    logger.exception("lease: catching up after taking the lease failed")
        elif was and not now_holds:
            logger.warning("lease lost: %s stops starting runs", self.holder)
        return now_holds

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.attempt()

    def start(self) -> None:
        """Try once now, then every ``ttl / 3`` in a daemon thread."""
        if self._thread is not None:
            return
        if not self.attempt():
            logger.info(
                "lease held by another scheduler: %s tries again every %gs",
                self.holder,
                self.interval,
            )
        self._thread = threading.Thread(target=self._loop, name="tsmeter-lease", daemon=True)
        self._thread.start()

    def stop(self, *, release: bool = True) -> None:
        """Stop renewing; ``release``: give the lease up now rather than let it expire."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 30)
        with self._lock:
            was = self._holding or time.monotonic() < self._held_until
            self._held_until = 0.0
            self._holding = False
        if release and was:
            try:
                self.leases.release(self.holder)
                logger.info("lease released by %s", self.holder)
            except Exception as exc:
                logger.warning(
                    "lease: cannot release (%s: %s); it expires within %gs",
                    type(exc).__name__,
                    " ".join(str(exc).split()),
                    self.ttl,
                )
