-- Initial schema (SQLite).
--
-- Ids are hyphenated lower-case UUID text. Timestamps are UTC in a fixed
-- width RFC 3339 form with six fractional digits ('2024-05-01T12:00:00.123456Z'),
-- so that text comparison and ORDER BY follow time order. JSON is text.

CREATE TABLE orgs (
    id          TEXT NOT NULL PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;

CREATE TABLE licenses (
    id          TEXT NOT NULL PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    key_hash    TEXT NOT NULL UNIQUE,
    key_hint    TEXT NOT NULL,
    seats       INTEGER NOT NULL CHECK (seats > 0),
    tier        TEXT NOT NULL,
    features    TEXT NOT NULL DEFAULT '[]'
                CHECK (json_valid(features) AND json_type(features) = 'array'),
    status      TEXT NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'suspended', 'inactive')),
    expires_at  TEXT,
    created_at  TEXT NOT NULL
) STRICT;

CREATE INDEX licenses_by_org ON licenses (org_id, created_at);

CREATE TABLE sessions (
    id                 TEXT NOT NULL PRIMARY KEY,
    license_id         TEXT NOT NULL REFERENCES licenses (id),
    org_id             TEXT NOT NULL REFERENCES orgs (id),
    hardware_id        TEXT NOT NULL,
    started_at         TEXT NOT NULL,
    last_heartbeat_at  TEXT NOT NULL,
    lease_expires_at   TEXT NOT NULL,
    ended_at           TEXT,
    end_reason         TEXT CHECK (end_reason IN ('released', 'expired', 'revoked')),
    ip                 TEXT,
    user_agent         TEXT,
    metadata           TEXT CHECK (metadata IS NULL OR json_valid(metadata)),
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
) STRICT;

-- Open sessions of an organization (also serves orgs_with_open_sessions).
CREATE INDEX sessions_open_by_org ON sessions (org_id, started_at) WHERE ended_at IS NULL;
CREATE INDEX sessions_by_license ON sessions (license_id, started_at);

-- Append-only: no foreign keys, so that history outlives what it mentions.
CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           TEXT NOT NULL,
    event        TEXT NOT NULL,
    org_id       TEXT NOT NULL,
    license_id   TEXT NOT NULL,
    session_id   TEXT,
    hardware_id  TEXT,
    ip           TEXT,
    user_agent   TEXT,
    detail       TEXT
) STRICT;

CREATE INDEX audit_by_license ON audit_log (license_id, id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
