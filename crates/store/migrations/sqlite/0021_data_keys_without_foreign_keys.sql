-- A new customer's data key is written in the same statement as its first token (the vault's
-- group commit), and its foreign-key checks (the merchant, the key-encryption key version) cost
-- as much as the row itself on PostgreSQL. Neither protects anything the statements do not
-- already: merchants and key-encryption key versions are never deleted (a version is retired by
-- clearing its wrapped material, and only when no data key names it), and data keys are inserted
-- only under the active version, for the merchant of the caller asking (`vault_tokens` keeps its
-- foreign key to `merchants`). Both databases keep one schema, so SQLite
-- rebuilds the table without them (SQLite cannot drop a constraint in place).
CREATE TABLE vault_data_keys_rebuilt (
    id           TEXT PRIMARY KEY,
    merchant_id  TEXT NOT NULL,
    -- '' for the merchant's own data key.
    customer_id  TEXT NOT NULL,
    kek_version  INTEGER NOT NULL,
    wrapped      BLOB NOT NULL,
    created_at   BIGINT NOT NULL,
    mode         TEXT NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'test'))
);
INSERT INTO vault_data_keys_rebuilt (id, merchant_id, customer_id, kek_version, wrapped, created_at, mode)
SELECT id, merchant_id, customer_id, kek_version, wrapped, created_at, mode FROM vault_data_keys;
DROP TABLE vault_data_keys;
ALTER TABLE vault_data_keys_rebuilt RENAME TO vault_data_keys;
CREATE UNIQUE INDEX vault_data_keys_owner ON vault_data_keys (merchant_id, mode, customer_id);
CREATE INDEX vault_data_keys_by_kek ON vault_data_keys (kek_version, id);
