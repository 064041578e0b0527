-- Checkout rules (issue 14): the fraud and card-testing signals of every confirmation, counted
-- per window from this table (so the counts hold across nodes and restarts), and the fraud
-- decision shown on the intent.

-- One row per confirmation attempt and signal kind: the attempt's customer, card fingerprint,
-- client address and device. `card` is the card's fingerprint id (distinct cards per key);
-- `small` marks an amount at or under the currency's small-amount threshold; `declined` is set
-- when the gateway declined the attempt. The primary key makes a repeated confirmation of the
-- same attempt (a retry after `step_up_required`, a racing duplicate) count once.
CREATE TABLE payment_signals (
    intent_id TEXT NOT NULL REFERENCES payment_intents (id),
    attempt INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('customer', 'card', 'ip', 'device')),
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    mode TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    key TEXT NOT NULL,
    card TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    small INTEGER NOT NULL DEFAULT 0 CHECK (small IN (0, 1)),
    declined INTEGER NOT NULL DEFAULT 0 CHECK (declined IN (0, 1)),
    at INTEGER NOT NULL,
    PRIMARY KEY (intent_id, attempt, kind)
);
CREATE INDEX payment_signals_window ON payment_signals (merchant_id, mode, kind, key, at);
CREATE INDEX payment_signals_age ON payment_signals (at);

-- The last fraud decision of an intent: `{"outcome": …, "reasons": […]}`.
ALTER TABLE payment_intents ADD COLUMN fraud TEXT;

-- A signed-in customer's own payments (`GET /v1/me/payments`), newest first.
CREATE INDEX payment_intents_customer ON payment_intents (merchant_id, mode, customer, created_at, id);
