-- Fences the outbox's claims: every claim stamps its rows with a fresh
-- token, and only the holder of the current token may settle or release a
-- message. (The attempt count can't serve: a released claim gives its
-- attempt back, so an attempt number can recur.)
ALTER TABLE outbox ADD COLUMN claim_token TEXT;

-- The email log: every message's delivery record, without its template
-- data (which may hold tokens until the message is settled).
CREATE VIEW email_log AS
    SELECT id, kind, recipient, status, attempts, last_error, created_at,
           next_attempt_at, sent_at
    FROM outbox;

CREATE INDEX outbox_by_recipient ON outbox (recipient, created_at);
