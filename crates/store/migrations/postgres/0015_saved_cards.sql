-- Saved cards (issue 14): a card a customer agreed to keep for later payments, made from the
-- first successful payment that asked for it (its consent and the network's transaction id kept
-- with it), used by later customer-initiated and merchant-initiated payments.

-- One row per saved card. `first_payment_intent` is unique: a payment saves at most one card,
-- however often its authorisation is settled. `status` moves from active to removed once, by a
-- conditional update; a payment claims an active card by a conditional update of the same row,
-- so a removal and a payment are ordered and no payment starts after the removal answered.
CREATE TABLE saved_cards (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    mode TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    customer TEXT NOT NULL,
    token TEXT NOT NULL,
    brand TEXT NOT NULL,
    last4 TEXT NOT NULL,
    usage TEXT NOT NULL CHECK (usage IN ('on_session', 'off_session')),
    consent TEXT NOT NULL,
    network_transaction_id TEXT,
    first_payment_intent TEXT NOT NULL UNIQUE REFERENCES payment_intents (id),
    status TEXT NOT NULL CHECK (status IN ('active', 'removed')),
    last_used_at BIGINT,
    created_at BIGINT NOT NULL,
    removed_at BIGINT,
    removed_by TEXT
);
CREATE INDEX saved_cards_customer ON saved_cards (merchant_id, mode, customer, created_at, id);

-- How an intent saves or uses a stored card: `{"save": {"usage", "consent"}, "saved_card",
-- "merchant_initiated", "network_transaction_id"}`.
ALTER TABLE payment_intents ADD COLUMN card_on_file TEXT;

-- What the sandbox gateway was told about stored credentials, and the network transaction id it
-- issued for an authorisation (so a test can see that a merchant-initiated payment named the
-- first payment's).
ALTER TABLE sandbox_ledger ADD COLUMN stored_credential TEXT;
ALTER TABLE sandbox_ledger ADD COLUMN network_transaction_id TEXT;
CREATE INDEX sandbox_ledger_network_transaction ON sandbox_ledger (network_transaction_id);
