-- The id ledger shared by the fleet: which record ids were sent to which InfluxDB target,
-- and where (series and time), so a retry through any host counts once.
CREATE TABLE dedupe_targets (
    target_no serial PRIMARY KEY,
    target text NOT NULL UNIQUE         -- base URL and database
);
CREATE TABLE dedupe_series (
    series_no bigserial PRIMARY KEY,
    target_no integer NOT NULL REFERENCES dedupe_targets,
    metric_key text NOT NULL,
    subject_type text NOT NULL,
    subject_id text NOT NULL,
    org_key text NOT NULL,              -- '' for global metrics
    UNIQUE (target_no, metric_key, subject_type, subject_id, org_key)
);
-- One row per id. Ids compare bytewise (COLLATE "C"): an index on a locale's collation
-- costs more per comparison, and every host then sorts an add the same way as Python does
-- (code points), which keeps concurrent adds' row locks in one order. No index on
-- series_no: one per add would cost each insert; forgetting a purged metric scans instead.
CREATE TABLE dedupe_ids (
    target_no integer NOT NULL,
    id text COLLATE "C" NOT NULL,
    series_no bigint NOT NULL,
    ts bigint NOT NULL,                 -- ns since the epoch
    writer_no bigint NOT NULL DEFAULT 0, -- a hash of the writer (host) that entered it; 0: unknown
    entered_at timestamptz NOT NULL DEFAULT now(), -- when, on the database's clock
    PRIMARY KEY (target_no, id)
);
