-- Decisions about a device: scope `device`, the shop's id of a customer's device as it passes it
-- in `client.device` (1 to 128 printable characters), with the action `block` (its sign-ins and
-- payments are refused, from any address).
-- SQLite cannot change a CHECK constraint in place: the table is made anew.
CREATE TABLE security_decisions_new (
    id TEXT PRIMARY KEY,
    merchant_key TEXT NOT NULL,
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('ip', 'prefix', 'api_key', 'account', 'device')),
    scope_value TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('block', 'suspend', 'step_up', 'lock')),
    reason TEXT NOT NULL,
    detail TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    until_at INTEGER NOT NULL,
    strikes INTEGER NOT NULL DEFAULT 1,
    lifted_at INTEGER,
    lifted_by TEXT,
    updated_at INTEGER NOT NULL,
    revision INTEGER NOT NULL DEFAULT 1,
    UNIQUE (merchant_key, scope_kind, scope_value, action)
);
INSERT INTO security_decisions_new (id, merchant_key, scope_kind, scope_value, action, reason, detail, created_by,
    created_at, until_at, strikes, lifted_at, lifted_by, updated_at, revision)
    SELECT id, merchant_key, scope_kind, scope_value, action, reason, detail, created_by, created_at, until_at,
        strikes, lifted_at, lifted_by, updated_at, revision FROM security_decisions;
DROP TABLE security_decisions;
ALTER TABLE security_decisions_new RENAME TO security_decisions;
CREATE INDEX security_decisions_active ON security_decisions (until_at);
CREATE INDEX security_decisions_changed ON security_decisions (updated_at);
