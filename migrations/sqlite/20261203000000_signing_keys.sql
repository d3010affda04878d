-- The seat-signing key set: the active key signs, older unretired keys still
-- verify, so tokens and license files signed before a rotation stay valid.
-- Private keys are stored sealed (AES-256-GCM) by the server, never in the
-- clear.
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    algorithm      TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,
    sealed_private BLOB NOT NULL,
    created_at     TEXT NOT NULL,
    active         INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),
    retired_at     TEXT,
    CHECK (NOT (active = 1 AND retired_at IS NOT NULL))
);
-- At most one active key.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active = 1;
