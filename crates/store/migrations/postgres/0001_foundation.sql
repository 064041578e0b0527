-- Foundation: merchants, API keys, the deployment keyring and the first-start marker.
-- Times are Unix milliseconds (UTC) in BIGINT columns; ids are prefixed random text.

CREATE TABLE merchants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL REFERENCES merchants (id),
    name          TEXT NOT NULL,
    mode          TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    scopes        TEXT NOT NULL,
    digest        BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);

CREATE INDEX api_keys_by_merchant ON api_keys (merchant_id, created_at DESC, id DESC);

CREATE TABLE keyring (
    name        TEXT PRIMARY KEY,
    kms_key_id  TEXT NOT NULL,
    wrapped     BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE bootstrap (
    singleton    INTEGER PRIMARY KEY CHECK (singleton = 1),
    merchant_id  TEXT NOT NULL REFERENCES merchants (id),
    created_at   BIGINT NOT NULL
);
