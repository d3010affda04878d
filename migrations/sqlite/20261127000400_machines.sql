-- Machines activated on licenses, the deactivations that freed slots (counted
-- per license over a sliding day), and two license policies: a machine limit
-- and whether acquire needs a credential of the license's organization.

ALTER TABLE licenses ADD COLUMN max_machines INTEGER CHECK (max_machines IS NULL OR max_machines > 0);
ALTER TABLE licenses ADD COLUMN requires_user INTEGER NOT NULL DEFAULT 0 CHECK (requires_user IN (0, 1));

CREATE TABLE machines (
    id            TEXT NOT NULL PRIMARY KEY,
    license_id    TEXT NOT NULL REFERENCES licenses (id),
    hardware_id   TEXT NOT NULL,
    name          TEXT,
    platform      TEXT,
    activated_at  TEXT NOT NULL,
    UNIQUE (license_id, hardware_id)
) STRICT;

CREATE TABLE machine_deactivations (
    license_id  TEXT NOT NULL REFERENCES licenses (id),
    at          TEXT NOT NULL
) STRICT;
CREATE INDEX machine_deactivations_by_license ON machine_deactivations (license_id, at);

-- Admin listings, newest first.
CREATE INDEX users_by_created ON users (created_at, id);
CREATE INDEX orgs_by_created ON orgs (created_at, id);
CREATE INDEX licenses_by_created ON licenses (created_at, id);
