-- Incidents and playbooks (issue 15): what detections (and staff) opened, worked through by the
-- shop's security staff. At most one incident per merchant is active (`open` or `contained`):
-- the partial unique index below is what decides, so of concurrent detections one opens it and
-- the others join it (`INSERT … ON CONFLICT DO NOTHING`, then the active row is read in the same
-- transaction). `merchant_key` is '' for a deployment-wide incident. A resolved incident is final.
CREATE TABLE security_incidents (
    id TEXT PRIMARY KEY,
    merchant_key TEXT NOT NULL,
    title TEXT NOT NULL,
    severity INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 4),
    state TEXT NOT NULL CHECK (state IN ('open', 'contained', 'resolved')),
    assignee TEXT,
    opened_by TEXT NOT NULL,
    opened_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    resolved_at INTEGER
);
CREATE UNIQUE INDEX security_incidents_one_active ON security_incidents (merchant_key)
    WHERE state IN ('open', 'contained');
CREATE INDEX security_incidents_by_merchant ON security_incidents (merchant_key, opened_at);

-- What happened, in order: detections joined, state changes, notes, playbook steps.
CREATE TABLE security_incident_timeline (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL REFERENCES security_incidents (id),
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT,
    data TEXT NOT NULL
);
CREATE INDEX security_incident_timeline_by_incident ON security_incident_timeline (incident_id, id);

-- Who or what was affected: accounts, tokens, API keys, clients; once each.
CREATE TABLE security_incident_subjects (
    incident_id TEXT NOT NULL REFERENCES security_incidents (id),
    kind TEXT NOT NULL CHECK (kind IN ('account', 'token', 'api_key', 'client')),
    value TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (incident_id, kind, value)
);

-- A merchant's freezes (playbook steps): refunds and forward-proxy calls refused while the
-- column is set. One row per merchant; freezing and unfreezing are conditional statements.
CREATE TABLE security_freezes (
    merchant_id TEXT PRIMARY KEY,
    refunds_frozen_at INTEGER,
    refunds_frozen_by TEXT,
    forwarding_frozen_at INTEGER,
    forwarding_frozen_by TEXT
);
