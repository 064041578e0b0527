-- Foundation: merchants, API keys, the deployment keyring and the first-start marker.
-- Times are Unix milliseconds (UTC) in INTEGER columns; ids are prefixed random text.

CREATE TABLE merchants (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY NOT NULL,
    merchant_id   TEXT NOT NULL REFERENCES merchants (id),
    name          TEXT NOT NULL,
    mode          TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    scopes        TEXT NOT NULL,
    digest        BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER,
    revoked_at    INTEGER
) STRICT;

CREATE INDEX api_keys_by_merchant ON api_keys (merchant_id, created_at DESC, id DESC);

CREATE TABLE keyring (
    name        TEXT PRIMARY KEY NOT NULL,
    kms_key_id  TEXT NOT NULL,
    wrapped     BLOB NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE bootstrap (
    singleton    INTEGER PRIMARY KEY NOT NULL CHECK (singleton = 1),
    merchant_id  TEXT NOT NULL REFERENCES merchants (id),
    created_at   INTEGER NOT NULL
) STRICT;
