-- The outbox: every email is a row written in the same transaction as the
-- change that causes it, delivered later by the mailer subsystem. The row
-- stays as the message's delivery record (the email log).

CREATE TABLE outbox (
    id               uuid PRIMARY KEY,
    kind             text NOT NULL,
    recipient        text NOT NULL,
    -- The template's context. Holds single-use tokens until the message is
    -- delivered or given up, then is cleared.
    data             jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL,
    -- A node that claimed the message owns it until then.
    claimed_until    timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL,
    sent_at          timestamptz
);

CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_by_created ON outbox (created_at, id);
