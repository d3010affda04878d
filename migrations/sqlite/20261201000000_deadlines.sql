-- Billing deadlines, fired once each by the renewals subsystem. Written in
-- the transactions that change what they are about (a license's expiry, a
-- subscription's grace period or trial), one row per (kind, subject).

CREATE TABLE deadlines (
    kind         TEXT NOT NULL
                 CHECK (kind IN ('grace_end', 'trial_end', 'expiry_warning', 'expiry')),
    -- A subscription id (grace_end, trial_end) or a license id (expiry,
    -- expiry_warning).
    subject      TEXT NOT NULL,
    -- When it is due; for an expiry warning, the expiry it warns of.
    due_at       TEXT NOT NULL,
    -- When it fired (its effect committed with this); NULL while pending.
    fired_at     TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error   TEXT,
    -- Fences the firing to the current claim.
    claim_token  TEXT,
    -- Not claimable before this: the end of a claim's lease, or a retry.
    not_before   TEXT,
    PRIMARY KEY (kind, subject)
) STRICT;

-- The claim reads pending deadlines by due time: its cost follows the due
-- ones, not every license ever issued.
CREATE INDEX deadlines_pending ON deadlines (due_at) WHERE fired_at IS NULL;

-- What was scheduled before this table existed.
INSERT INTO deadlines (kind, subject, due_at)
    SELECT k.kind, l.id, l.expires_at
    FROM licenses l CROSS JOIN (SELECT 'expiry' AS kind UNION ALL SELECT 'expiry_warning') AS k
    WHERE l.expires_at IS NOT NULL;
INSERT INTO deadlines (kind, subject, due_at)
    SELECT 'grace_end', id, grace_ends_at FROM subscriptions WHERE grace_ends_at IS NOT NULL;
INSERT INTO deadlines (kind, subject, due_at)
    SELECT 'trial_end', id, trial_end FROM subscriptions
    WHERE trial_end IS NOT NULL AND status = 'trialing';
