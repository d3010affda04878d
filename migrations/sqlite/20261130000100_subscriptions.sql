-- Subscriptions as the payment provider (Stripe) last told us, each with
-- the license it pays for, and each organization's customer there.

CREATE TABLE billing_customers (
    org_id       TEXT NOT NULL PRIMARY KEY REFERENCES orgs (id),
    customer_id  TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL
) STRICT;

CREATE TABLE subscriptions (
    id                    TEXT NOT NULL PRIMARY KEY,
    org_id                TEXT NOT NULL REFERENCES orgs (id),
    customer_id           TEXT NOT NULL,
    plan_id               TEXT NOT NULL,
    interval              TEXT NOT NULL CHECK (interval IN ('month', 'year')),
    quantity              INTEGER NOT NULL CHECK (quantity >= 1),
    status                TEXT NOT NULL,
    current_period_start  TEXT NOT NULL,
    current_period_end    TEXT NOT NULL,
    trial_end             TEXT,
    license_id            TEXT NOT NULL UNIQUE REFERENCES licenses (id),
    failed_payments       INTEGER NOT NULL DEFAULT 0 CHECK (failed_payments >= 0),
    grace_ends_at         TEXT,
    canceled_at           TEXT,
    last_event_at         TEXT NOT NULL,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL
) STRICT;

CREATE INDEX subscriptions_by_org ON subscriptions (org_id, created_at);
