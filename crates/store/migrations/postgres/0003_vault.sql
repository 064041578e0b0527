-- The vault: versioned key-encryption keys (wrapped by the KMS root key), data keys per merchant
-- and per customer (wrapped by a key-encryption key), and tokens (values sealed under a data key).
-- A data key row is deleted to crypto-shred its customer; token rows then keep no value.

CREATE TABLE vault_keks (
    version     BIGINT PRIMARY KEY,
    kms_key_id  TEXT NOT NULL,
    wrapped     BYTEA,
    state       TEXT NOT NULL CHECK (state IN ('active', 'previous', 'retired')),
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);

-- At most one active version.
CREATE UNIQUE INDEX vault_keks_one_active ON vault_keks (state) WHERE state = 'active';

CREATE TABLE vault_data_keys (
    id           TEXT PRIMARY KEY,
    merchant_id  TEXT NOT NULL REFERENCES merchants (id),
    -- '' for the merchant's own data key.
    customer_id  TEXT NOT NULL,
    kek_version  BIGINT NOT NULL REFERENCES vault_keks (version),
    wrapped      BYTEA NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE UNIQUE INDEX vault_data_keys_owner ON vault_data_keys (merchant_id, customer_id);
CREATE INDEX vault_data_keys_by_kek ON vault_data_keys (kek_version, id);

CREATE TABLE vault_tokens (
    id           TEXT PRIMARY KEY,
    merchant_id  TEXT NOT NULL REFERENCES merchants (id),
    customer_id  TEXT,
    kind         TEXT NOT NULL,
    data_key_id  TEXT NOT NULL,
    -- NULL once the customer's data was erased.
    ciphertext   BYTEA,
    fingerprint  BYTEA,
    -- Set only on tokens created with dedupe: one such token per value, kind and merchant.
    dedupe_fp    BYTEA,
    display      TEXT NOT NULL,
    metadata     TEXT,
    canary       BOOLEAN NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    erased_at    BIGINT
);

CREATE UNIQUE INDEX vault_tokens_dedupe ON vault_tokens (merchant_id, kind, dedupe_fp);
CREATE INDEX vault_tokens_by_fingerprint ON vault_tokens (merchant_id, kind, fingerprint);
CREATE INDEX vault_tokens_by_customer ON vault_tokens (merchant_id, customer_id);
CREATE INDEX vault_tokens_by_expiry ON vault_tokens (expires_at) WHERE expires_at IS NOT NULL;

-- Keys made by a first start hold every scope; they gain the vault's scopes too.
UPDATE api_keys
SET scopes = scopes || ' admin:keys vault:write vault:read vault:reveal:masked vault:reveal:pii vault:reveal:card privacy:erase'
WHERE scopes = 'admin:api_keys admin:metrics audit:read';
