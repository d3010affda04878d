-- The inbox of verified webhook events (Stripe's), recorded before the 2xx
-- goes back and processed once each by the webhooks subsystem. The event id
-- is the key: a redelivery records nothing.

CREATE TABLE webhook_events (
    id               TEXT NOT NULL PRIMARY KEY,
    kind             TEXT NOT NULL,
    -- The event's own `created`, which orders processing.
    created          TEXT NOT NULL,
    -- The verified body, byte for byte.
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('pending', 'processing', 'processed', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error       TEXT,
    -- The next attempt, or the end of the current claim's lease; NULL once
    -- processed or given up.
    next_attempt_at  TEXT,
    -- Fences settling writes to the current claim.
    claim_token      TEXT,
    received_at      TEXT NOT NULL,
    processed_at     TEXT
) STRICT;

CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX webhook_events_by_received ON webhook_events (received_at, id);
