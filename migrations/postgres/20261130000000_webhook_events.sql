-- The inbox of verified webhook events (Stripe's), recorded before the 2xx
-- goes back and processed once each by the webhooks subsystem. The event id
-- is the key: a redelivery records nothing.

CREATE TABLE webhook_events (
    id               text PRIMARY KEY,
    kind             text NOT NULL,
    -- The event's own `created`, which orders processing.
    created          timestamptz NOT NULL,
    -- The verified body, byte for byte.
    payload          text NOT NULL,
    status           text NOT NULL
                     CHECK (status IN ('pending', 'processing', 'processed', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error       text,
    -- The next attempt, or the end of the current claim's lease; NULL once
    -- processed or given up.
    next_attempt_at  timestamptz,
    -- Fences settling writes to the current claim.
    claim_token      uuid,
    received_at      timestamptz NOT NULL,
    processed_at     timestamptz
);

CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX webhook_events_by_received ON webhook_events (received_at, id);
