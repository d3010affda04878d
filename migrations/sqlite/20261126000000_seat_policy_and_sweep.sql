-- Offline policy per license, license revisions for change notices, and the
-- cluster-wide sweep of lapsed sessions.

ALTER TABLE licenses ADD COLUMN offline_grace_secs INTEGER CHECK (offline_grace_secs >= 0);
ALTER TABLE licenses ADD COLUMN offline_overdraft INTEGER NOT NULL DEFAULT 0 CHECK (offline_overdraft >= 0);
-- Every change to a license takes max(revision) + 1 under the write lock;
-- the server polls for revisions above the last it saw.
ALTER TABLE licenses ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
CREATE INDEX licenses_by_revision ON licenses (revision) WHERE revision > 0;

-- When the sweep next looks at an open session: its lease expiry, pushed
-- forward by heartbeats, claims and graced leases. (SQLite can't add a NOT
-- NULL column without a constant default; the empty string sorts first, so
-- a row that somehow lacked one would be swept at once.)
ALTER TABLE sessions ADD COLUMN sweep_at TEXT NOT NULL DEFAULT '';
UPDATE sessions SET sweep_at = lease_expires_at;
CREATE INDEX sessions_sweep_due ON sessions (sweep_at) WHERE ended_at IS NULL;
CREATE INDEX sessions_open_by_license ON sessions (license_id) WHERE ended_at IS NULL;
