-- Decisions about accounts: scope `account` (a customer `cus_…` or a staff member `stf_…`) with
-- the actions `step_up` (a password sign-in must pass a second factor) and `lock` (no sign-in).
-- An account may have a step-up and a lock in force at once, so the row is one per merchant,
-- scope and action (for the other scopes the action follows from the scope: nothing changes).
-- SQLite cannot change a CHECK or UNIQUE constraint in place: the table is made anew.
CREATE TABLE security_decisions_new (
    id TEXT PRIMARY KEY,
    merchant_key TEXT NOT NULL,
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('ip', 'prefix', 'api_key', 'account')),
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
