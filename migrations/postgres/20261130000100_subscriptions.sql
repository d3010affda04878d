-- Subscriptions as the payment provider (Stripe) last told us, each with
-- the license it pays for, and each organization's customer there.

CREATE TABLE billing_customers (
    org_id       uuid PRIMARY KEY REFERENCES orgs (id),
    customer_id  text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL
);

CREATE TABLE subscriptions (
    id                    text PRIMARY KEY,
    org_id                uuid NOT NULL REFERENCES orgs (id),
    customer_id           text NOT NULL,
    plan_id               text NOT NULL,
    interval              text NOT NULL CHECK (interval IN ('month', 'year')),
    quantity              integer NOT NULL CHECK (quantity >= 1),
    status                text NOT NULL,
    current_period_start  timestamptz NOT NULL,
    current_period_end    timestamptz NOT NULL,
    trial_end             timestamptz,
    license_id            uuid NOT NULL UNIQUE REFERENCES licenses (id),
    failed_payments       integer NOT NULL DEFAULT 0 CHECK (failed_payments >= 0),
    grace_ends_at         timestamptz,
    canceled_at           timestamptz,
    last_event_at         timestamptz NOT NULL,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL
);

CREATE INDEX subscriptions_by_org ON subscriptions (org_id, created_at);
