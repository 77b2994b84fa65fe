"""The exit statuses of ``tsmeter``: the one place they are defined.

Scripts branch on them (``tsmeter threshold check ... || case $? in 3) ...``), so each
outcome a script may handle differently has its own status. The root command's help and the
CLI reference (``tools/cli_reference.py``) print the table from :data:`ExitCode` itself, so
the documentation cannot drift from the code.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode"]


class ExitCode(IntEnum):
    """An exit status of ``tsmeter`` and what it means (:attr:`meaning`).

    >>> int(ExitCode.OVER_LIMIT), ExitCode.OVER_LIMIT.meaning
    (3, 'over a limit: threshold check would block, or recording was refused by a quota')
    """

    OK = 0
    ERROR = 1
    USAGE = 2
    OVER_LIMIT = 3
    DRIFT = 4
    STORE = 5
    NOT_FOUND = 6

    @property
    def meaning(self) -> str:
        """One line for the table of exit statuses."""
        return _MEANINGS[self]

    @property
    def label(self) -> str:
        """A few words, for ``--help``: ``over a limit``."""
        return _MEANINGS[self].split(":", 1)[0].split(" (", 1)[0]

    @classmethod
    def summary(cls) -> str:
        """Every status with its label, in one sentence (the root command's help).

        >>> ExitCode.summary()[:40]
        'Exit status: 0 success, 1 an error repor'
        """
        return "Exit status: " + ", ".join(f"{c.value} {c.label}" for c in cls) + "."


_MEANINGS = {
    ExitCode.OK: "success (threshold check: allowed; reconcile: the copies agree)",
    ExitCode.ERROR: "an error reported by tsmeter (bad input, a conflict, a missing extra, "
    "partial failure)",
    ExitCode.USAGE: "bad usage: an unknown command or option, a missing or malformed argument",
    ExitCode.OVER_LIMIT: "over a limit: threshold check would block, or recording was "
    "refused by a quota",
    ExitCode.DRIFT: "drift: reconcile found differences beyond the tolerance; apply --dry-run "
    "found the store differing from the file",
    ExitCode.STORE: "the store or a service cannot be used: unreachable, refusing, missing (no "
    "--create), not a tsmeter store",
    ExitCode.NOT_FOUND: "not found: a named metric, threshold, alert or record does not exist",
}
