-- Decoy API keys: made by the operator to be planted where only a thief would find them. A decoy
-- looks and is stored like any key (by hash) and has no scopes; a request presenting one answers
-- as an unknown key does, and intrusion detection blocks the client everywhere.
ALTER TABLE api_keys ADD COLUMN decoy BOOLEAN NOT NULL DEFAULT FALSE;

-- The digest of an accepted staff invitation, kept so that the link presented again is told
-- apart from one that never existed (intrusion detection's replayed tokens).
ALTER TABLE staff ADD COLUMN invite_spent_digest BYTEA;
