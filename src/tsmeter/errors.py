"""The errors tsmeter raises.

Every error derives from one root, so callers can catch ``TsmeterError`` and
know they have handled everything tsmeter itself reports::

    TsmeterError
    ├── ValidationError        bad input: a field and what is wrong with it
    ├── NotFoundError          a metric, threshold or record that does not exist
    ├── ConflictError          a key that exists already, or a change that would lose data
    ├── StorageUnavailableError the store cannot be reached or refused the operation
    │   ├── RejectedError      the store refused the data itself (sending it again fails again)
    │   └── SeriesError        some series cannot be read or summed; the others were
    ├── QuotaExceededError     recording would pass a BLOCK threshold (``enforce=True``)
    ├── OutboxFullError        the outbox stayed full for the whole timeout: nothing was queued
    └── MissingExtraError      an optional dependency is not installed: names the extra to install

Adapters translate their SDK's exceptions into these at their boundary
(``raise StorageUnavailableError(...) from exc``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "ConflictError",
    "MissingExtraError",
    "NotFoundError",
    "OutboxFullError",
    "QuotaExceededError",
    "RejectedError",
    "SeriesError",
    "StorageUnavailableError",
    "TsmeterError",
    "ValidationError",
]


class TsmeterError(Exception):
    """Root of every error tsmeter raises on purpose."""


class ValidationError(TsmeterError, ValueError):
    """Input was rejected; ``field`` names the offending field (``records[3].quantity``).

    Example::

        >>> raise ValidationError("quantity", "must be a finite number, got nan")
        Traceback (most recent call last):
        tsmeter.errors.ValidationError: quantity: must be a finite number, got nan
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)

    def at(self, prefix: str) -> ValidationError:
        """Return the same error with ``prefix`` put before the field name."""
        field = f"{prefix}.{self.field}" if self.field else prefix
        return ValidationError(field, self.problem)

    def unprefixed(self, prefix: str) -> ValidationError:
        """Undo :meth:`at`: the same error with ``prefix`` taken off the field name."""
        if self.field == prefix:
            return ValidationError("", self.problem)
        return ValidationError(self.field.removeprefix(f"{prefix}."), self.problem)


class NotFoundError(TsmeterError, LookupError):
    """A named thing does not exist, e.g. ``metric 'api_calls' not found``."""


class ConflictError(TsmeterError):
    """The operation clashes with what is stored (duplicate key, data that would be lost)."""


class StorageUnavailableError(TsmeterError):
    """The store could not be reached, or failed while doing what was asked."""

    #: after a write failed part-way: how many of the call's records the store holds, as the
    #: store checked (None: not known)
    records_stored: int | None = None


class RejectedError(StorageUnavailableError):
    """The store refused the data it was sent (a client error such as a malformed or
    out-of-retention point, not authentication, a missing target or rate limiting): sending
    the same data again fails again."""


class SeriesError(StorageUnavailableError):
    """Some series' usage cannot be read or summed (e.g. stored values whose sum overflows);
    every other series was. ``series`` names the failed ones as (metric, subject type, subject
    id, org id); ``rows`` holds what was computed for the others (store rows, or empty)."""

    def __init__(
        self, message: str, series: Sequence[tuple[str, str, str, str | None]], rows: Any = ()
    ) -> None:
        super().__init__(message)
        self.series = list(series)
        self.rows = list(rows)

    @classmethod
    def naming(
        cls, series: Sequence[tuple[str, str, str, str | None]], problem: str, rows: Any = ()
    ) -> SeriesError:
        """The error for ``series``, whose usage ``problem`` (a phrase), naming up to five.

        >>> print(SeriesError.naming([("gb", "org", "acme", None)], "cannot be summed"))
        usage of gb for org 'acme' cannot be summed; other series are unaffected
        """
        names = ", ".join(
            f"{metric} for {subject_type} {subject_id!r}" + (f" (org {org!r})" if org else "")
            for metric, subject_type, subject_id, org in series[:5]
        )
        more = f" and {len(series) - 5} more series" if len(series) > 5 else ""
        return cls(f"usage of {names}{more} {problem}; other series are unaffected", series, rows)


class OutboxFullError(TsmeterError):
    """The outbox held its maximum of pending records for the whole timeout; the records of
    this call were not queued."""


class QuotaExceededError(TsmeterError):
    """Recording would take usage past a BLOCK threshold; nothing was recorded.

    ``decision`` (a :class:`tsmeter.limits.quotas.QuotaDecision`) has the limit, the usage
    and the end of the window.
    """

    def __init__(self, message: str, decision: object) -> None:
        super().__init__(message)
        self.decision = decision


class MissingExtraError(TsmeterError, ImportError):
    """An optional package a feature needs is not installed; ``extra`` names the tsmeter
    extra that installs it and ``install`` the command to run (see :mod:`tsmeter.extras`).

    It is also an ImportError, so code that treats an optional import as absent still does.

    Example::

        >>> print(MissingExtraError("report", "matplotlib", "tsmeter report"))
        tsmeter report needs the package 'matplotlib' (not installed): pip install 'tsmeter[report]'
    """

    def __init__(self, extra: str, module: str, feature: str) -> None:
        self.extra = extra
        self.module = module
        self.install = f"pip install 'tsmeter[{extra}]'"
        super().__init__(
            f"{feature} needs the package {module!r} (not installed): {self.install}",
            name=module,
        )
