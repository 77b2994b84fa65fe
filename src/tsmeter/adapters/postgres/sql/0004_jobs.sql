-- Scheduled jobs run once per period across the fleet. One scheduler holds a named lease
-- (the leader) and runs the jobs; the others take it over once it has expired. Times are
-- nanoseconds since the epoch on the database's clock, never a host's.
CREATE TABLE job_leases (
    name text PRIMARY KEY,              -- the lease ('scheduler')
    holder text NOT NULL,               -- the scheduler (host and process) holding it
    acquired_at bigint NOT NULL,        -- when this holder took it
    renewed_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
-- The periods a job has run for, so a period runs once even when the lease moves.
CREATE TABLE job_runs (
    job text NOT NULL,
    period_start bigint NOT NULL,       -- ns: the start of the period the run was for
    holder text NOT NULL,
    started_at bigint NOT NULL,
    finished_at bigint,                 -- NULL while running (or its holder died)
    outcome text CHECK (outcome IN ('ok', 'error')),
    PRIMARY KEY (job, period_start)
);
