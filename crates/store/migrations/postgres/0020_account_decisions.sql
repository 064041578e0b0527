-- Decisions about accounts: scope `account` (a customer `cus_…` or a staff member `stf_…`) with
-- the actions `step_up` (a password sign-in must pass a second factor) and `lock` (no sign-in).
-- An account may have a step-up and a lock in force at once, so the row is one per merchant,
-- scope and action (for the other scopes the action follows from the scope: nothing changes).
ALTER TABLE security_decisions DROP CONSTRAINT security_decisions_scope_kind_check;
ALTER TABLE security_decisions ADD CONSTRAINT security_decisions_scope_kind_check
    CHECK (scope_kind IN ('ip', 'prefix', 'api_key', 'account'));
ALTER TABLE security_decisions DROP CONSTRAINT security_decisions_action_check;
ALTER TABLE security_decisions ADD CONSTRAINT security_decisions_action_check
    CHECK (action IN ('block', 'suspend', 'step_up', 'lock'));
ALTER TABLE security_decisions DROP CONSTRAINT security_decisions_merchant_key_scope_kind_scope_value_key;
ALTER TABLE security_decisions ADD CONSTRAINT security_decisions_scope_action_key
    UNIQUE (merchant_key, scope_kind, scope_value, action);
