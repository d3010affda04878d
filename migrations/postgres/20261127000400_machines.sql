-- Machines activated on licenses, the deactivations that freed slots (counted
-- per license over a sliding day), and two license policies: a machine limit
-- and whether acquire needs a credential of the license's organization.

ALTER TABLE licenses
    ADD COLUMN max_machines integer CHECK (max_machines IS NULL OR max_machines > 0),
    ADD COLUMN requires_user boolean NOT NULL DEFAULT false;

CREATE TABLE machines (
    id            uuid PRIMARY KEY,
    license_id    uuid NOT NULL REFERENCES licenses (id),
    hardware_id   text NOT NULL,
    name          text,
    platform      text,
    activated_at  timestamptz NOT NULL,
    UNIQUE (license_id, hardware_id)
);

CREATE TABLE machine_deactivations (
    license_id  uuid NOT NULL REFERENCES licenses (id),
    at          timestamptz NOT NULL
);
CREATE INDEX machine_deactivations_by_license ON machine_deactivations (license_id, at);

-- Admin listings, newest first.
CREATE INDEX users_by_created ON users (created_at, id);
CREATE INDEX orgs_by_created ON orgs (created_at, id);
CREATE INDEX licenses_by_created ON licenses (created_at, id);
