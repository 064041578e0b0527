-- Payments (issue 14): orders with their versions, payment intents, the gateway calls made for
-- them, refunds, and the sandbox gateway's own ledger. Money is BIGINT minor units beside its
-- ISO 4217 currency (lower case). Every object belongs to one data space (merchant, mode).

-- An order: line items and the totals strongroom computed. Each amendment is a new version
-- (the row holds the newest; `order_versions` every one). `locked_at` is set when a payment on
-- the order is confirmed: from then on it cannot be amended.
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    mode TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    version BIGINT NOT NULL CHECK (version >= 1),
    currency TEXT NOT NULL,
    amount_total BIGINT NOT NULL CHECK (amount_total >= 0),
    body TEXT NOT NULL,
    customer TEXT,
    locked_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX orders_space ON orders (merchant_id, mode, created_at, id);

CREATE TABLE order_versions (
    order_id TEXT NOT NULL REFERENCES orders (id),
    version BIGINT NOT NULL,
    body TEXT NOT NULL,
    amount_total BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (order_id, version)
);

-- A payment intent. `status` moves only by conditional updates (`WHERE id AND status = …`);
-- `attempt` counts authorisations asked for; `pending_operation` names the gateway call an
-- intent in `processing` waits for. Refunded never exceeds received (a CHECK as well as the
-- conditional update that decides).
CREATE TABLE payment_intents (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    mode TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    amount BIGINT NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    order_id TEXT REFERENCES orders (id),
    customer TEXT,
    payment_method TEXT,
    capture_method TEXT NOT NULL CHECK (capture_method IN ('automatic', 'manual')),
    status TEXT NOT NULL CHECK (status IN ('requires_payment_method', 'requires_confirmation', 'requires_action',
        'processing', 'requires_capture', 'succeeded', 'canceled')),
    attempt BIGINT NOT NULL DEFAULT 0,
    pending_operation TEXT,
    amount_capturable BIGINT NOT NULL DEFAULT 0 CHECK (amount_capturable >= 0),
    amount_received BIGINT NOT NULL DEFAULT 0 CHECK (amount_received >= 0),
    amount_refunded BIGINT NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0 AND amount_refunded <= amount_received),
    last_payment_error TEXT,
    next_action TEXT,
    card TEXT,
    gateway TEXT NOT NULL,
    gateway_reference TEXT,
    description TEXT NOT NULL DEFAULT '',
    metadata TEXT,
    cancellation_reason TEXT,
    canceled_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX payment_intents_space ON payment_intents (merchant_id, mode, created_at, id);
CREATE INDEX payment_intents_order ON payment_intents (order_id);
CREATE INDEX payment_intents_status ON payment_intents (status, updated_at);

-- Every gateway call, recorded before it is made, under the idempotency key the gateway sees
-- (`<intent or refund>:<operation>:<attempt>`): a retry after a crash reuses the key, so the
-- gateway answers the first call again instead of charging twice. `outcome` is set when the
-- gateway answered.
CREATE TABLE payment_gateway_calls (
    idempotency_key TEXT PRIMARY KEY,
    intent_id TEXT NOT NULL REFERENCES payment_intents (id),
    operation TEXT NOT NULL CHECK (operation IN ('authorize', 'capture', 'cancel', 'refund')),
    amount BIGINT NOT NULL,
    outcome TEXT,
    created_at BIGINT NOT NULL,
    answered_at BIGINT
);
CREATE INDEX payment_gateway_calls_open ON payment_gateway_calls (outcome, created_at);

CREATE TABLE refunds (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    mode TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    payment_intent TEXT NOT NULL REFERENCES payment_intents (id),
    amount BIGINT NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    reason TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    failure_reason TEXT,
    gateway_reference TEXT,
    metadata TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX refunds_space ON refunds (merchant_id, mode, created_at, id);
CREATE INDEX refunds_intent ON refunds (payment_intent, id);

-- The sandbox gateway's ledger: what it authorised, captured, voided and refunded, once per
-- idempotency key (the unique key is what makes a replayed call answer instead of act).
CREATE TABLE sandbox_ledger (
    idempotency_key TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    reference TEXT NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    outcome TEXT NOT NULL,
    decline_code TEXT,
    challenge TEXT,
    gateway_reference TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX sandbox_ledger_reference ON sandbox_ledger (reference, operation);

-- The sandbox's simulated 3-D Secure challenges. A payment has at most one open (not consumed)
-- challenge: an authorisation reuses it while it is pending and consumes it once it was decided.
CREATE TABLE sandbox_challenges (
    id TEXT PRIMARY KEY,
    reference TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'passed', 'failed', 'consumed')),
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX sandbox_challenges_open ON sandbox_challenges (reference) WHERE status <> 'consumed';
