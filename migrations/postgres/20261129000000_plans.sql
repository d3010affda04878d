-- The plan catalogue: seeded from configuration at start-up (rows that exist
-- are never overwritten), edited by platform administrators, retired rather
-- than deleted so that subscriptions on a plan can always read it.
--
-- The id sorts bytewise ("C"), as in SQLite, whatever the database's locale.

CREATE TABLE plans (
    id                    text COLLATE "C" PRIMARY KEY
                          CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,39}$'),
    name                  text NOT NULL,
    currency              text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    monthly_price_cents   bigint NOT NULL CHECK (monthly_price_cents > 0),
    annual_price_cents    bigint CHECK (annual_price_cents IS NULL OR annual_price_cents > 0),
    seats                 integer NOT NULL CHECK (seats > 0),
    trial_days            integer NOT NULL CHECK (trial_days BETWEEN 0 AND 730),
    stripe_price_monthly  text NOT NULL,
    stripe_price_annual   text,
    features              jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(features) = 'array'),
    retired_at            timestamptz,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    CHECK ((annual_price_cents IS NULL) = (stripe_price_annual IS NULL))
);

-- Listings, by price.
CREATE INDEX plans_by_price ON plans (monthly_price_cents, id);
