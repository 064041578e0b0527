-- The outbox: every message strongroom sends (mail, the operator's alert webhook, the shop's
-- webhook endpoints), one row per destination, written with the change that caused it and
-- delivered at least once by the job runner's leader. `event_id` is stable across retries and
-- destinations (the `webhook-id` receivers deduplicate by). Mail payloads are sealed.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    merchant_id TEXT,
    channel TEXT NOT NULL CHECK (channel IN ('mail', 'webhook', 'alert')),
    destination TEXT,
    event_type TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    leased_until INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    delivered_at INTEGER,
    last_attempt_at INTEGER,
    last_status_code INTEGER,
    last_latency_ms INTEGER,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_destination ON outbox (destination, id);

-- The shop's webhook endpoints. Signing secrets are sealed under the keyring's outbox key.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    url TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    event_types TEXT NOT NULL,
    secret_sealed BLOB NOT NULL,
    previous_secret_sealed BLOB,
    previous_secret_until INTEGER,
    status TEXT NOT NULL CHECK (status IN ('enabled', 'disabled')),
    failing_since INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id, created_at);

-- Each background job's last run, written by the leader.
CREATE TABLE job_runs (
    name TEXT PRIMARY KEY,
    node TEXT,
    last_started_at INTEGER,
    last_finished_at INTEGER,
    last_outcome TEXT,
    last_detail TEXT,
    last_duration_ms INTEGER,
    runs INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0
);

-- The leader's heartbeat (the lock itself is an advisory lock on PostgreSQL).
CREATE TABLE job_leader (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    node TEXT NOT NULL,
    since INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);

-- Idempotency-Key: the first answer to a POST, per caller (a keyed digest of its credential) and
-- key, kept sealed for 24 hours; `unavailable` answers showed a secret once and are not kept.
CREATE TABLE idempotency_keys (
    scope BLOB NOT NULL,
    key TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('in_progress', 'done', 'unavailable')),
    status INTEGER,
    content_type TEXT,
    body_sealed BLOB,
    locked_until INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
