-- Accounts: users, their memberships in organizations, single-use email
-- tokens, refresh tokens, and failed logins for the lockout.

CREATE TABLE users (
    id                 uuid PRIMARY KEY,
    email              text NOT NULL,
    -- Addresses compare case-insensitively: the unique key is the lower case.
    email_lower        text NOT NULL UNIQUE,
    password_hash      text NOT NULL,
    full_name          text NOT NULL,
    email_verified_at  timestamptz,
    is_platform_admin  boolean NOT NULL DEFAULT false,
    locked_until       timestamptz,
    created_at         timestamptz NOT NULL
);

CREATE TABLE org_members (
    org_id      uuid NOT NULL REFERENCES orgs (id),
    user_id     uuid NOT NULL REFERENCES users (id),
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX org_members_by_user ON org_members (user_id);

-- Verification and password-reset tokens: only their SHA-256 is kept.
CREATE TABLE user_tokens (
    token_hash  text PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id),
    purpose     text NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    created_at  timestamptz NOT NULL
);
CREATE INDEX user_tokens_by_user ON user_tokens (user_id, purpose);

-- Refresh tokens rotate on every use; all tokens descended from one login
-- share a family, which is revoked whole when a used token comes back.
CREATE TABLE refresh_tokens (
    token_hash  text PRIMARY KEY,
    family_id   uuid NOT NULL,
    user_id     uuid NOT NULL REFERENCES users (id),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_user ON refresh_tokens (user_id);

CREATE TABLE login_failures (
    user_id  uuid NOT NULL REFERENCES users (id),
    at       timestamptz NOT NULL
);
CREATE INDEX login_failures_by_user ON login_failures (user_id, at);

-- The audit log now also records what people do: entries about accounts
-- have no license (or no organization), and name who acted.
ALTER TABLE audit_log
    ALTER COLUMN org_id DROP NOT NULL,
    ALTER COLUMN license_id DROP NOT NULL,
    ADD COLUMN actor_id uuid;
CREATE INDEX audit_by_org ON audit_log (org_id, id);
CREATE INDEX audit_by_actor ON audit_log (actor_id, id);
