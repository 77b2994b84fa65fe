-- Scheduled jobs run once per period across the fleet: a job's lease names the scheduler
-- that holds it and until when; another takes it over once it has expired.
CREATE TABLE job_leases (
    job text PRIMARY KEY,
    holder text NOT NULL,               -- the scheduler (host and process) holding it
    expires_at bigint NOT NULL,         -- ns since the epoch (the database's clock)
    renewed_at bigint NOT NULL
);
-- The periods a job has run for, so a period runs once even when the lease moves.
CREATE TABLE job_runs (
    job text NOT NULL,
    period_start bigint NOT NULL,       -- ns: the period (or tick) the run was for
    holder text NOT NULL,
    started_at bigint NOT NULL,
    finished_at bigint,
    outcome text,                       -- ok | error
    PRIMARY KEY (job, period_start)
);
