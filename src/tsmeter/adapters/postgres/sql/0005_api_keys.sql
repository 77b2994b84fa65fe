-- API keys of the HTTP API, shared so that every server of a fleet accepts the same keys.
-- Only the SHA-256 of each key is kept, never the key (see tsmeter.access). Times in ns.
CREATE TABLE api_keys (
    id text PRIMARY KEY,
    name text NOT NULL,
    scopes text NOT NULL,               -- comma-separated: ingest, read, admin
    secret_hash bytea NOT NULL,
    created_at bigint NOT NULL,
    revoked_at bigint                   -- NULL while the key is valid
);
