-- Notifications of threshold alerts, queued in the transaction that opens or resolves the
-- alert, claimed by one worker of the fleet at a time.
CREATE TABLE notify_deliveries (
    seq bigserial UNIQUE,               -- the order they were queued in (ties of times)
    id text PRIMARY KEY,                -- the delivery id (X-Tsmeter-Delivery), stable across retries
    alert_id text NOT NULL,
    event text NOT NULL,                -- threshold.approaching | threshold.exceeded | ...resolved
    channel text NOT NULL,              -- email | webhook
    target text NOT NULL,               -- the address or the URL
    metric_key text NOT NULL,
    subject_type text NOT NULL,
    subject_id text NOT NULL,
    payload text NOT NULL,              -- what is sent, rendered at enqueue time (JSON)
    status text NOT NULL,               -- pending | delivered | failed
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    next_attempt_at bigint NOT NULL,    -- ns since the epoch
    claimed_until bigint,               -- ns, the database's clock: a worker is attempting it
                                        -- until then (a dead worker's claim runs out)
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    delivered_at bigint,
    UNIQUE (alert_id, event, channel, target)
);
CREATE INDEX notify_deliveries_due ON notify_deliveries (status, next_attempt_at);
