-- Intrusion detection's decisions (issue 15): what strongroom (or a staff member) decided about a
-- client, stored so that every node applies it. One row per merchant and scope (`merchant_key`
-- is '' for a deployment-wide decision): a new decision for a scope replaces the row only when
-- its decision is over (expired or lifted), by one conditional upsert, so of concurrent
-- detections on several nodes one decides; `strikes` counts the decisions of the last day, and
-- each one lasts longer. Lifting and extending are conditional updates of an active row.
-- `revision` grows with every change of the row: nodes reload when the sum changes.
CREATE TABLE security_decisions (
    id TEXT PRIMARY KEY,
    merchant_key TEXT NOT NULL,
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('ip', 'prefix', 'api_key')),
    scope_value TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('block', 'suspend')),
    reason TEXT NOT NULL,
    detail TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    until_at BIGINT NOT NULL,
    strikes BIGINT NOT NULL DEFAULT 1,
    lifted_at BIGINT,
    lifted_by TEXT,
    updated_at BIGINT NOT NULL,
    revision BIGINT NOT NULL DEFAULT 1,
    UNIQUE (merchant_key, scope_kind, scope_value)
);
CREATE INDEX security_decisions_active ON security_decisions (until_at);
CREATE INDEX security_decisions_changed ON security_decisions (updated_at);
