-- Gateway events and disputes (issue 14, Stripe): what a gateway tells us on its own.

-- Every gateway event (a Stripe webhook's event id) takes effect once: the first delivery claims
-- its row by one conditional insert; a replay finds it and is acknowledged without effect. A
-- claim whose process died (status still 'claimed' past the claim timeout) may be taken over by
-- a conditional update. Rows named 'type:<event type>' mark unknown event types audited once.
CREATE TABLE gateway_events (
    gateway TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('claimed', 'processed')),
    claimed_at INTEGER NOT NULL,
    processed_at INTEGER,
    PRIMARY KEY (gateway, event_id)
);

-- A dispute of ours (dp_...), mapped from the gateway's (one row per gateway reference), in the
-- disputed intent's data space. Reason and status are the gateway's codes.
CREATE TABLE disputes (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    mode TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    payment_intent TEXT NOT NULL REFERENCES payment_intents (id),
    amount INTEGER NOT NULL CHECK (amount >= 0),
    currency TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    evidence_due_by INTEGER,
    gateway TEXT NOT NULL,
    gateway_reference TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (gateway, gateway_reference)
);
CREATE INDEX disputes_space ON disputes (merchant_id, mode, created_at, id);

-- Gateway events name the gateway's payment id: find the intent by it.
CREATE INDEX payment_intents_gateway_reference ON payment_intents (gateway, gateway_reference);
