"""The scheduler's leader lease and run claims in a SQLite state file, for several scheduler
processes on one host.

Implements :class:`tsmeter.ports.JobLeases` with the tables of the PostgreSQL adapter
(``job_leases``, ``job_runs``). Each call is one ``BEGIN IMMEDIATE`` transaction, which SQLite
serialises across processes. The clock is the host's wall clock (every process sharing the
file shares it); a monotonic clock would not survive a reboot, leaving old leases unexpired.
"""

from __future__ import annotations

import time

from tsmeter._sqlite import StateFile
from tsmeter.adapters.leasing import check_claim, check_name, ttl_ns

__all__ = ["SQLiteLeases"]

DDL = """
CREATE TABLE IF NOT EXISTS job_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,       -- ns since the epoch
    renewed_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS job_runs (
    job TEXT NOT NULL,
    period_start INTEGER NOT NULL,      -- ns: the start of the period the run was for
    holder TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,                -- NULL while running (or its holder died)
    outcome TEXT,                       -- ok | error
    PRIMARY KEY (job, period_start)
);
"""


class SQLiteLeases(StateFile):
    """The lease called ``name`` and the job runs, in the SQLite file at ``path``.

    Example: ``SQLiteLeases("usage.db").acquire("host-a:412", 30.0)``.
    """

    def __init__(self, path: str, *, name: str = "scheduler") -> None:
        self.name = check_name(name, "lease")
        super().__init__(path, DDL, "job leases")

    def acquire(self, holder: str, ttl_s: float) -> bool:
        """Take the lease if free or expired, or renew it if ``holder`` holds it."""
        holder, ttl = check_name(holder), ttl_ns(ttl_s)
        with self._write() as conn:
            conn.execute("BEGIN IMMEDIATE")
            now = time.time_ns()
            row = conn.execute(
                "SELECT holder, acquired_at, expires_at FROM job_leases WHERE name = ?",
                (self.name,),
            ).fetchone()
            if row is not None and row[0] != holder and row[2] > now:
                conn.execute("COMMIT")
                return False
            acquired = row[1] if row is not None and row[0] == holder and row[2] > now else now
            conn.execute(
                "INSERT INTO job_leases (name, holder, acquired_at, renewed_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET holder ="
                " excluded.holder, acquired_at = excluded.acquired_at, renewed_at ="
                " excluded.renewed_at, expires_at = excluded.expires_at",
                (self.name, holder, acquired, now, now + ttl),
            )
            conn.execute("COMMIT")
            return True

    def release(self, holder: str) -> None:
        """Let the lease expire now if ``holder`` holds it."""
        holder = check_name(holder)
        with self._write() as conn:
            now = time.time_ns()
            conn.execute(
                "UPDATE job_leases SET expires_at = ?"
                " WHERE name = ? AND holder = ? AND expires_at > ?",
                (now, self.name, holder, now),
            )

    def claim_run(self, job: str, period_start_ns: int, holder: str) -> bool:
        """Claim (job, period) for ``holder``, which must hold the lease."""
        job, holder = check_claim(job, period_start_ns), check_name(holder)
        with self._write() as conn:
            conn.execute("BEGIN IMMEDIATE")
            now = time.time_ns()
            holds = conn.execute(
                "SELECT 1 FROM job_leases WHERE name = ? AND holder = ? AND expires_at > ?",
                (self.name, holder, now),
            ).fetchone()
            claimed = holds is not None and (
                conn.execute(
                    "INSERT INTO job_runs AS r (job, period_start, holder, started_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (job, period_start) DO UPDATE"
                    " SET holder = excluded.holder, started_at = excluded.started_at"
                    " WHERE r.finished_at IS NULL AND r.holder <> excluded.holder"
                    " AND NOT EXISTS (SELECT 1 FROM job_leases l"
                    " WHERE l.holder = r.holder AND l.expires_at > excluded.started_at)",
                    (job, period_start_ns, holder, now),
                ).rowcount
                == 1
            )
            conn.execute("COMMIT")
            return claimed

    def finish_run(self, job: str, period_start_ns: int, holder: str, *, ok: bool) -> None:
        """Mark ``holder``'s run of (job, period) finished."""
        job, holder = check_claim(job, period_start_ns), check_name(holder)
        with self._write() as conn:
            conn.execute(
                "UPDATE job_runs SET finished_at = ?, outcome = ?"
                " WHERE job = ? AND period_start = ? AND holder = ? AND finished_at IS NULL",
                (time.time_ns(), "ok" if ok else "error", job, period_start_ns, holder),
            )
