-- Organizations from the inside: invitations, API keys, and the indexes
-- that keyset pagination of members, licenses and sessions reads.

-- Only the SHA-256 of an invitation's single-use token is kept; the token
-- travels in the email alone.
CREATE TABLE invitations (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES orgs (id),
    email        text NOT NULL,
    email_lower  text NOT NULL,
    role         text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    token_hash   text NOT NULL UNIQUE,
    invited_by   uuid NOT NULL REFERENCES users (id),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    accepted_at  timestamptz,
    accepted_by  uuid REFERENCES users (id),
    revoked_at   timestamptz,
    CHECK ((accepted_at IS NULL) = (accepted_by IS NULL))
);
CREATE INDEX invitations_by_org ON invitations (org_id, created_at, id);

-- Credentials for an organization's machines: a role of member or guest,
-- only the SHA-256 of the key kept. Looked up by hash on every request.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES orgs (id),
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('member', 'guest')),
    key_hash    text NOT NULL UNIQUE,
    key_hint    text NOT NULL,
    created_by  uuid NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX api_keys_by_org ON api_keys (org_id, created_at, id);

-- Pages of members, licenses and sessions are read in (time, id) order.
CREATE INDEX org_members_by_org ON org_members (org_id, created_at, user_id);
CREATE INDEX licenses_by_org_page ON licenses (org_id, created_at, id);
CREATE INDEX sessions_by_license_page ON sessions (license_id, started_at, id);
