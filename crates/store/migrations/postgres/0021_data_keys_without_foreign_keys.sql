-- A new customer's data key is written in the same statement as its first token (the vault's
-- group commit), and its two foreign-key checks (the merchant, the key-encryption key version)
-- cost PostgreSQL about as much as the row itself: each is a trigger running a locking query per
-- row. Neither protects anything the statements do not already: merchants and key-encryption
-- key versions are never deleted (a version is retired by clearing its wrapped material, and only
-- when no data key names it), the statements that insert data keys store a key only under the active
-- version, for the merchant of the caller asking (and `vault_tokens` keeps its foreign key to
-- `merchants`). So the data keys drop theirs.
ALTER TABLE vault_data_keys DROP CONSTRAINT vault_data_keys_merchant_id_fkey;
ALTER TABLE vault_data_keys DROP CONSTRAINT vault_data_keys_kek_version_fkey;
