-- The seat-signing key set: the active key signs, older unretired keys still
-- verify, so tokens and license files signed before a rotation stay valid.
-- Private keys are stored sealed (AES-256-GCM) by the server, never in the
-- clear.
CREATE TABLE signing_keys (
    kid            text PRIMARY KEY,
    algorithm      text NOT NULL,
    public_jwk     text NOT NULL,
    sealed_private bytea NOT NULL,
    created_at     timestamptz NOT NULL,
    active         boolean NOT NULL DEFAULT false,
    retired_at     timestamptz,
    CHECK (NOT (active AND retired_at IS NOT NULL))
);
-- At most one active key.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active;
