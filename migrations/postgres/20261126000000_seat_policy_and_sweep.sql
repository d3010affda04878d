-- Offline policy per license, license revisions for change notices, and the
-- cluster-wide sweep of lapsed sessions.

ALTER TABLE licenses
    ADD COLUMN offline_grace_secs integer CHECK (offline_grace_secs >= 0),
    ADD COLUMN offline_overdraft integer NOT NULL DEFAULT 0 CHECK (offline_overdraft >= 0),
    ADD COLUMN revision bigint NOT NULL DEFAULT 0;

-- Every change to a license takes the next value; nodes poll for revisions
-- above the last they saw.
CREATE SEQUENCE license_revisions;
CREATE INDEX licenses_by_revision ON licenses (revision) WHERE revision > 0;

-- When the sweep next looks at an open session: its lease expiry, pushed
-- forward by heartbeats, claims and graced leases.
ALTER TABLE sessions ADD COLUMN sweep_at timestamptz;
UPDATE sessions SET sweep_at = lease_expires_at;
ALTER TABLE sessions ALTER COLUMN sweep_at SET NOT NULL;
CREATE INDEX sessions_sweep_due ON sessions (sweep_at) WHERE ended_at IS NULL;
CREATE INDEX sessions_open_by_license ON sessions (license_id) WHERE ended_at IS NULL;
