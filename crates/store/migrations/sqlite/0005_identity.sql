-- Identity: customer accounts (email sealed under the customer's vault data key, found by a keyed
-- hash), recovery codes (keyed hashes), sign-in failures per subject, sessions (keyed hashes of
-- their tokens) and second-factor challenges (sign-in and step-up, with step-up proofs as keyed
-- hashes). No secret is stored in the clear.

CREATE TABLE customers (
    id                  TEXT PRIMARY KEY,
    merchant_id         TEXT NOT NULL REFERENCES merchants (id),
    email_lookup        BLOB NOT NULL,
    email_sealed        BLOB NOT NULL,
    -- No foreign key: erasing the customer's data deletes the data key first.
    data_key_id         TEXT NOT NULL,
    email_verified_at   BIGINT,
    password_hash       TEXT,
    password_changed_at BIGINT,
    status              TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    totp_sealed         BLOB,
    totp_confirmed_at   BIGINT,
    totp_last_step      BIGINT,
    phrase_sealed       BLOB,
    created_at          BIGINT NOT NULL
);

CREATE UNIQUE INDEX customers_email ON customers (merchant_id, email_lookup);

CREATE TABLE customer_recovery_codes (
    customer_id TEXT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    digest      BLOB NOT NULL,
    created_at  BIGINT NOT NULL,
    used_at     BIGINT,
    PRIMARY KEY (customer_id, digest)
);

-- Per subject (keyed hash of the email tried), known account or not.
CREATE TABLE login_failures (
    merchant_id TEXT NOT NULL,
    subject     BLOB NOT NULL,
    failures    BIGINT NOT NULL,
    last_at     BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, subject)
);

CREATE TABLE customer_sessions (
    id           TEXT PRIMARY KEY,
    merchant_id  TEXT NOT NULL,
    customer_id  TEXT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    token_digest BLOB NOT NULL UNIQUE,
    factors      TEXT NOT NULL,
    user_agent   TEXT,
    ip           TEXT,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    ended_at     BIGINT
);

CREATE INDEX customer_sessions_by_customer ON customer_sessions (customer_id, user_agent);
CREATE INDEX customer_sessions_by_expiry ON customer_sessions (expires_at);

CREATE TABLE auth_challenges (
    id               TEXT PRIMARY KEY,
    merchant_id      TEXT NOT NULL,
    customer_id      TEXT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    purpose          TEXT NOT NULL CHECK (purpose IN ('login', 'step_up', 'verify_email', 'password_reset')),
    binding_digest   BLOB,
    session_id       TEXT,
    client           TEXT,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    failures         BIGINT NOT NULL DEFAULT 0,
    completed_at     BIGINT,
    proof_digest     BLOB UNIQUE,
    proof_expires_at BIGINT,
    proof_used_at    BIGINT,
    -- An emailed one-time code for this sign-in (keyed hash) and when it stops working.
    code_digest      BLOB,
    code_expires_at  BIGINT
);

CREATE INDEX auth_challenges_by_expiry ON auth_challenges (expires_at);

-- Keys made by a first start hold every scope; they gain identity's too.
UPDATE api_keys
SET scopes = scopes || ' identity:customers'
WHERE scopes = 'admin:api_keys admin:metrics audit:read admin:keys vault:write vault:read vault:reveal:masked vault:reveal:pii vault:reveal:card privacy:erase';
