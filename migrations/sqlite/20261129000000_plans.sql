-- The plan catalogue: seeded from configuration at start-up (rows that exist
-- are never overwritten), edited by platform administrators, retired rather
-- than deleted so that subscriptions on a plan can always read it.

CREATE TABLE plans (
    id                    TEXT NOT NULL PRIMARY KEY
                          CHECK (length(id) BETWEEN 1 AND 40 AND id NOT GLOB '*[^a-z0-9-]*'
                                 AND substr(id, 1, 1) <> '-'),
    name                  TEXT NOT NULL,
    currency              TEXT NOT NULL CHECK (length(currency) = 3),
    monthly_price_cents   INTEGER NOT NULL CHECK (monthly_price_cents > 0),
    annual_price_cents    INTEGER CHECK (annual_price_cents IS NULL OR annual_price_cents > 0),
    seats                 INTEGER NOT NULL CHECK (seats > 0),
    trial_days            INTEGER NOT NULL CHECK (trial_days BETWEEN 0 AND 730),
    stripe_price_monthly  TEXT NOT NULL,
    stripe_price_annual   TEXT,
    features              TEXT NOT NULL DEFAULT '[]'
                          CHECK (json_valid(features) AND json_type(features) = 'array'),
    retired_at            TEXT,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    CHECK ((annual_price_cents IS NULL) = (stripe_price_annual IS NULL))
) STRICT;

-- Listings, by price.
CREATE INDEX plans_by_price ON plans (monthly_price_cents, id);
