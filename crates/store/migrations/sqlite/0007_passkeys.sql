-- Passkeys (WebAuthn credentials) of customers and staff: public keys and counters only, found
-- by credential id; and ceremonies in flight, whose server-side state is taken once.

CREATE TABLE passkeys (
    id            TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL REFERENCES merchants (id),
    owner_kind    TEXT NOT NULL CHECK (owner_kind IN ('customer', 'staff')),
    owner_id      TEXT NOT NULL,
    credential_id BLOB NOT NULL UNIQUE,
    passkey       TEXT NOT NULL,
    label         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT
);

CREATE INDEX passkeys_by_owner ON passkeys (owner_kind, owner_id);

CREATE TABLE webauthn_ceremonies (
    id          TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    owner_kind  TEXT NOT NULL CHECK (owner_kind IN ('customer', 'staff')),
    owner_id    TEXT,
    purpose     TEXT NOT NULL CHECK (purpose IN ('register', 'sign_in')),
    state       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE INDEX webauthn_ceremonies_by_expiry ON webauthn_ceremonies (expires_at);
