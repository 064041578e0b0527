-- Live and test: each merchant has two data spaces, and every object in one says which. Rows
-- written before this migration were live. Uniqueness (one data key per customer, one dedupe
-- token per value, one account per email) holds within a space, never across.
ALTER TABLE vault_data_keys ADD COLUMN mode TEXT NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'test'));
DROP INDEX vault_data_keys_owner;
CREATE UNIQUE INDEX vault_data_keys_owner ON vault_data_keys (merchant_id, mode, customer_id);

ALTER TABLE vault_tokens ADD COLUMN mode TEXT NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'test'));
DROP INDEX vault_tokens_dedupe;
CREATE UNIQUE INDEX vault_tokens_dedupe ON vault_tokens (merchant_id, mode, kind, dedupe_fp);
DROP INDEX vault_tokens_by_fingerprint;
CREATE INDEX vault_tokens_by_fingerprint ON vault_tokens (merchant_id, mode, kind, fingerprint);
DROP INDEX vault_tokens_by_customer;
CREATE INDEX vault_tokens_by_customer ON vault_tokens (merchant_id, mode, customer_id);

ALTER TABLE customers ADD COLUMN mode TEXT NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'test'));
DROP INDEX customers_email;
CREATE UNIQUE INDEX customers_email ON customers (merchant_id, mode, email_lookup);

ALTER TABLE webhook_endpoints ADD COLUMN mode TEXT NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'test'));
DROP INDEX webhook_endpoints_merchant;
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id, mode, created_at);
