-- Staff: accounts (email sealed under the merchant's vault data key, found by a keyed hash unique
-- across the deployment), sessions (keyed hashes of tokens), sign-in challenges, custom roles and
-- four-eyes approval requests. No secret is stored in the clear.

CREATE TABLE staff (
    id                  TEXT PRIMARY KEY,
    merchant_id         TEXT NOT NULL REFERENCES merchants (id),
    email_lookup        BYTEA NOT NULL UNIQUE,
    email_sealed        BYTEA NOT NULL,
    data_key_id         TEXT NOT NULL,
    password_hash       TEXT,
    -- Previous PHC strings, newest first, one per line.
    password_history    TEXT NOT NULL DEFAULT '',
    password_changed_at BIGINT,
    status              TEXT NOT NULL CHECK (status IN ('invited', 'active', 'disabled')),
    failures            BIGINT NOT NULL DEFAULT 0,
    locked_until        BIGINT,
    totp_sealed         BYTEA,
    totp_confirmed_at   BIGINT,
    totp_last_step      BIGINT,
    -- Role names, space-separated.
    roles               TEXT NOT NULL DEFAULT '',
    invite_digest       BYTEA UNIQUE,
    invite_expires_at   BIGINT,
    created_by          TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);

CREATE INDEX staff_by_merchant ON staff (merchant_id, created_at);

CREATE TABLE staff_sessions (
    id           TEXT PRIMARY KEY,
    merchant_id  TEXT NOT NULL,
    staff_id     TEXT NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    token_digest BYTEA NOT NULL UNIQUE,
    factors      TEXT NOT NULL,
    user_agent   TEXT,
    ip           TEXT,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    ended_at     BIGINT
);

CREATE INDEX staff_sessions_by_staff ON staff_sessions (staff_id);
CREATE INDEX staff_sessions_by_expiry ON staff_sessions (expires_at);

CREATE TABLE staff_challenges (
    id           TEXT PRIMARY KEY,
    staff_id     TEXT NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    purpose      TEXT NOT NULL CHECK (purpose IN ('login', 'enrol')),
    client       TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    failures     BIGINT NOT NULL DEFAULT 0,
    completed_at BIGINT
);

CREATE INDEX staff_challenges_by_expiry ON staff_challenges (expires_at);

CREATE TABLE staff_roles (
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    -- Permission names, space-separated.
    permissions TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, name)
);

CREATE TABLE approvals (
    id           TEXT PRIMARY KEY,
    merchant_id  TEXT NOT NULL REFERENCES merchants (id),
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    reason       TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'used')),
    decided_by   TEXT,
    decided_at   BIGINT,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT,
    CHECK (decided_by IS NULL OR decided_by <> requested_by)
);

CREATE INDEX approvals_by_merchant ON approvals (merchant_id, requested_at);

-- Keys made by a first start hold every scope; they gain the new ones too.
UPDATE api_keys
SET scopes = scopes || ' admin:staff payments:refund'
WHERE scopes = 'admin:api_keys admin:metrics audit:read admin:keys vault:write vault:read vault:reveal:masked vault:reveal:pii vault:reveal:card privacy:erase identity:customers';
