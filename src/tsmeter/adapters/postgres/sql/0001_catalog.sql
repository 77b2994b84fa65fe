-- Metric definitions, thresholds and alerts: the catalog, shared by every host.
CREATE TABLE metrics (
    id text PRIMARY KEY,
    org_key text NOT NULL,              -- '' for global metrics
    key text NOT NULL,
    doc text NOT NULL,                  -- the definition as camelCase JSON
    UNIQUE (org_key, key)               -- listed in byte order (COLLATE "C"), as SQLite does
);
CREATE TABLE thresholds (
    seq bigserial UNIQUE,               -- the order they were created in
    id text PRIMARY KEY,
    doc text NOT NULL
);
-- At most one open (not RESOLVED) alert per threshold, subject, window and level, whatever
-- number of monitors try at once. automatic: resolved by a monitor (usage fell), so the
-- level may fire again; one resolved by hand blocks its key for the rest of the window.
CREATE TABLE alerts (
    seq bigserial UNIQUE,               -- the order they were opened in (ties of created_at)
    id text PRIMARY KEY,
    threshold_id text NOT NULL,
    subject_type text NOT NULL,
    subject_id text NOT NULL,
    window_start bigint NOT NULL,       -- ns, 0 for a lifetime window
    level text NOT NULL,
    status text NOT NULL,
    automatic boolean NOT NULL DEFAULT false,
    created_at bigint NOT NULL,         -- ns since the epoch
    doc text NOT NULL                   -- the UsageAlert as camelCase JSON
);
CREATE UNIQUE INDEX alerts_open ON alerts (threshold_id, subject_type, subject_id, window_start, level)
    WHERE status <> 'RESOLVED';
CREATE INDEX alerts_window ON alerts (threshold_id, window_start);
CREATE INDEX alerts_created ON alerts (created_at DESC, id DESC);
