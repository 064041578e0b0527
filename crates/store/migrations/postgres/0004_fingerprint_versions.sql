-- Fingerprint keys are versioned: each token records the version its fingerprint (and dedupe
-- key) was computed under, so a rotation can recompute them in the background.
ALTER TABLE vault_tokens ADD COLUMN fingerprint_version BIGINT NOT NULL DEFAULT 1;
CREATE INDEX vault_tokens_by_fingerprint_version ON vault_tokens (fingerprint_version, id);
