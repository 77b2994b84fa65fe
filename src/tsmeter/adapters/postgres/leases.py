"""The scheduler's leader lease and run claims in the PostgreSQL state database.

Implements :class:`tsmeter.ports.JobLeases` on the ``job_leases`` and ``job_runs`` tables
(``sql/0004_jobs.sql``). Every time comes from the database's clock (``clock_timestamp()``), so
hosts whose clocks disagree still agree on who holds the lease. Each call is one statement or
one short transaction: an upsert whose ``WHERE`` is re-checked on the locked row makes taking
a lease atomic, and a claim holds the lease row ``FOR SHARE`` so the lease cannot move while
the claim is decided.
"""

from __future__ import annotations

from tsmeter.adapters.leasing import check_claim, check_name, ttl_ns
from tsmeter.adapters.postgres.database import StateDatabase

__all__ = ["PostgresLeases"]

# now, in ns since the epoch, on the database's clock
_NOW = "(extract(epoch FROM clock_timestamp()) * 1000000000)::bigint"

_ACQUIRE = f"""
WITH now AS (SELECT {_NOW} AS ns)
INSERT INTO job_leases AS l (name, holder, acquired_at, renewed_at, expires_at)
SELECT %(name)s, %(holder)s, now.ns, now.ns, now.ns + %(ttl)s FROM now
ON CONFLICT (name) DO UPDATE
    SET holder = EXCLUDED.holder,
        acquired_at = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > EXCLUDED.renewed_at
                           THEN l.acquired_at ELSE EXCLUDED.acquired_at END,
        renewed_at = EXCLUDED.renewed_at,
        expires_at = EXCLUDED.expires_at
    WHERE l.holder = EXCLUDED.holder OR l.expires_at <= EXCLUDED.renewed_at
RETURNING l.holder
"""

_RELEASE = f"""
UPDATE job_leases SET expires_at = {_NOW}
WHERE name = %(name)s AND holder = %(holder)s AND expires_at > {_NOW}
"""

_HOLDS = f"""
SELECT 1 FROM job_leases
WHERE name = %(name)s AND holder = %(holder)s AND expires_at > {_NOW}
FOR SHARE
"""

# A period is claimed when nobody claimed it, or when its claim is unfinished and the claim's
# holder holds no live lease any more (it died or was cut off mid-run).
_CLAIM = f"""
WITH now AS (SELECT {_NOW} AS ns)
INSERT INTO job_runs AS r (job, period_start, holder, started_at)
SELECT %(job)s, %(period)s, %(holder)s, now.ns FROM now
ON CONFLICT (job, period_start) DO UPDATE
    SET holder = EXCLUDED.holder, started_at = EXCLUDED.started_at
    WHERE r.finished_at IS NULL AND r.holder <> EXCLUDED.holder
      AND NOT EXISTS (
          SELECT 1 FROM job_leases l
          WHERE l.holder = r.holder AND l.expires_at > EXCLUDED.started_at
      )
RETURNING 1
"""

_FINISH = f"""
UPDATE job_runs SET finished_at = {_NOW}, outcome = %(outcome)s
WHERE job = %(job)s AND period_start = %(period)s AND holder = %(holder)s
  AND finished_at IS NULL
"""


class PostgresLeases:
    """The lease called ``name`` and the job runs, in the state database ``db``.

    The database is shared with the other PostgreSQL adapters and is not closed here.
    Example: ``PostgresLeases(StateDatabase(url)).acquire("host-a:412", 30.0)``.
    """

    def __init__(self, db: StateDatabase, *, name: str = "scheduler") -> None:
        self.db = db
        self.name = check_name(name, "lease")

    def acquire(self, holder: str, ttl_s: float) -> bool:
        """Take the lease if free or expired, or renew it if ``holder`` holds it."""
        params = {"name": self.name, "holder": check_name(holder), "ttl": ttl_ns(ttl_s)}
        with self.db.transaction() as conn:
            return conn.execute(_ACQUIRE, params).fetchone() is not None

    def release(self, holder: str) -> None:
        """Let the lease expire now if ``holder`` holds it."""
        with self.db.transaction() as conn:
            conn.execute(_RELEASE, {"name": self.name, "holder": check_name(holder)})

    def claim_run(self, job: str, period_start_ns: int, holder: str) -> bool:
        """Claim (job, period) for ``holder``, which must hold the lease."""
        params = {
            "name": self.name,
            "holder": check_name(holder),
            "job": check_claim(job, period_start_ns),
            "period": period_start_ns,
        }
        with self.db.transaction() as conn:
            if conn.execute(_HOLDS, params).fetchone() is None:
                return False
            return conn.execute(_CLAIM, params).fetchone() is not None

    def finish_run(self, job: str, period_start_ns: int, holder: str, *, ok: bool) -> None:
        """Mark ``holder``'s run of (job, period) finished."""
        params = {
            "job": check_claim(job, period_start_ns),
            "period": period_start_ns,
            "holder": check_name(holder),
            "outcome": "ok" if ok else "error",
        }
        with self.db.transaction() as conn:
            conn.execute(_FINISH, params)
