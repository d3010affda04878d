-- Organizations from the inside: invitations, API keys, and the indexes
-- that keyset pagination of members, licenses and sessions reads.

-- Only the SHA-256 of an invitation's single-use token is kept; the token
-- travels in the email alone.
CREATE TABLE invitations (
    id           TEXT NOT NULL PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES orgs (id),
    email        TEXT NOT NULL,
    email_lower  TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    token_hash   TEXT NOT NULL UNIQUE,
    invited_by   TEXT NOT NULL REFERENCES users (id),
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    accepted_at  TEXT,
    accepted_by  TEXT REFERENCES users (id),
    revoked_at   TEXT,
    CHECK ((accepted_at IS NULL) = (accepted_by IS NULL))
) STRICT;
CREATE INDEX invitations_by_org ON invitations (org_id, created_at, id);

-- Credentials for an organization's machines: a role of member or guest,
-- only the SHA-256 of the key kept. Looked up by hash on every request.
CREATE TABLE api_keys (
    id          TEXT NOT NULL PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('member', 'guest')),
    key_hash    TEXT NOT NULL UNIQUE,
    key_hint    TEXT NOT NULL,
    created_by  TEXT NOT NULL REFERENCES users (id),
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
) STRICT;
CREATE INDEX api_keys_by_org ON api_keys (org_id, created_at, id);

-- Pages of members, licenses and sessions are read in (time, id) order.
CREATE INDEX org_members_by_org ON org_members (org_id, created_at, user_id);
CREATE INDEX licenses_by_org_page ON licenses (org_id, created_at, id);
CREATE INDEX sessions_by_license_page ON sessions (license_id, started_at, id);
