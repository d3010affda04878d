-- Borrowing: a license's policy (the longest borrow, in hours; 0 is off), and
-- which sessions are borrowed seats, held with no heartbeats until their end.

ALTER TABLE licenses ADD COLUMN max_borrow_hours INTEGER NOT NULL DEFAULT 0 CHECK (max_borrow_hours >= 0);
ALTER TABLE sessions ADD COLUMN borrowed_until TEXT;
-- The borrowed-seat gauge counts these at each scrape.
CREATE INDEX sessions_open_borrowed ON sessions (license_id) WHERE ended_at IS NULL AND borrowed_until IS NOT NULL;
