-- Initial schema (PostgreSQL).

CREATE TABLE orgs (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE licenses (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES orgs (id),
    key_hash    text NOT NULL UNIQUE,
    key_hint    text NOT NULL,
    seats       integer NOT NULL CHECK (seats > 0),
    tier        text NOT NULL,
    features    jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(features) = 'array'),
    status      text NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'suspended', 'inactive')),
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX licenses_by_org ON licenses (org_id, created_at);

CREATE TABLE sessions (
    id                 uuid PRIMARY KEY,
    license_id         uuid NOT NULL REFERENCES licenses (id),
    org_id             uuid NOT NULL REFERENCES orgs (id),
    hardware_id        text NOT NULL,
    started_at         timestamptz NOT NULL,
    last_heartbeat_at  timestamptz NOT NULL,
    lease_expires_at   timestamptz NOT NULL,
    ended_at           timestamptz,
    end_reason         text CHECK (end_reason IN ('released', 'expired', 'revoked')),
    ip                 text,
    user_agent         text,
    metadata           jsonb,
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);

-- Open sessions of an organization (also serves orgs_with_open_sessions).
CREATE INDEX sessions_open_by_org ON sessions (org_id, started_at) WHERE ended_at IS NULL;
CREATE INDEX sessions_by_license ON sessions (license_id, started_at);

-- Append-only: no foreign keys, so that history outlives what it mentions.
CREATE TABLE audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL,
    event        text NOT NULL,
    org_id       uuid NOT NULL,
    license_id   uuid NOT NULL,
    session_id   uuid,
    hardware_id  text,
    ip           text,
    user_agent   text,
    detail       text
);

CREATE INDEX audit_by_license ON audit_log (license_id, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
