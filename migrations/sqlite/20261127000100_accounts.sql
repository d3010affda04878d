-- Accounts: users, their memberships in organizations, single-use email
-- tokens, refresh tokens, and failed logins for the lockout.

CREATE TABLE users (
    id                 TEXT NOT NULL PRIMARY KEY,
    email              TEXT NOT NULL,
    -- Addresses compare case-insensitively: the unique key is the lower case.
    email_lower        TEXT NOT NULL UNIQUE,
    password_hash      TEXT NOT NULL,
    full_name          TEXT NOT NULL,
    email_verified_at  TEXT,
    is_platform_admin  INTEGER NOT NULL DEFAULT 0 CHECK (is_platform_admin IN (0, 1)),
    locked_until       TEXT,
    created_at         TEXT NOT NULL
) STRICT;

CREATE TABLE org_members (
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    user_id     TEXT NOT NULL REFERENCES users (id),
    role        TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    created_at  TEXT NOT NULL,
    PRIMARY KEY (org_id, user_id)
) STRICT;
CREATE INDEX org_members_by_user ON org_members (user_id);

-- Verification and password-reset tokens: only their SHA-256 is kept.
CREATE TABLE user_tokens (
    token_hash  TEXT NOT NULL PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id),
    purpose     TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    expires_at  TEXT NOT NULL,
    used_at     TEXT,
    created_at  TEXT NOT NULL
) STRICT;
CREATE INDEX user_tokens_by_user ON user_tokens (user_id, purpose);

-- Refresh tokens rotate on every use; all tokens descended from one login
-- share a family, which is revoked whole when a used token comes back.
CREATE TABLE refresh_tokens (
    token_hash  TEXT NOT NULL PRIMARY KEY,
    family_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id),
    expires_at  TEXT NOT NULL,
    used_at     TEXT,
    revoked_at  TEXT,
    created_at  TEXT NOT NULL
) STRICT;
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_user ON refresh_tokens (user_id);

CREATE TABLE login_failures (
    user_id  TEXT NOT NULL REFERENCES users (id),
    at       TEXT NOT NULL
) STRICT;
CREATE INDEX login_failures_by_user ON login_failures (user_id, at);

-- The audit log now also records what people do: entries about accounts
-- have no license (or no organization), and name who acted. SQLite cannot
-- drop NOT NULL, so the table is rebuilt with its rows and ids.
DROP TRIGGER audit_log_no_update;
DROP TRIGGER audit_log_no_delete;
CREATE TABLE audit_log_next (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           TEXT NOT NULL,
    event        TEXT NOT NULL,
    org_id       TEXT,
    license_id   TEXT,
    session_id   TEXT,
    hardware_id  TEXT,
    ip           TEXT,
    user_agent   TEXT,
    detail       TEXT,
    actor_id     TEXT
) STRICT;
INSERT INTO audit_log_next (id, at, event, org_id, license_id, session_id, hardware_id, ip, user_agent, detail)
    SELECT id, at, event, org_id, license_id, session_id, hardware_id, ip, user_agent, detail FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_next RENAME TO audit_log;
CREATE INDEX audit_by_license ON audit_log (license_id, id);
CREATE INDEX audit_by_org ON audit_log (org_id, id);
CREATE INDEX audit_by_actor ON audit_log (actor_id, id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
