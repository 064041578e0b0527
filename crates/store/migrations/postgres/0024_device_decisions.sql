-- Decisions about a device: scope `device`, the shop's id of a customer's device as it passes it
-- in `client.device` (1 to 128 printable characters), with the action `block` (its sign-ins and
-- payments are refused, from any address).
ALTER TABLE security_decisions DROP CONSTRAINT security_decisions_scope_kind_check;
ALTER TABLE security_decisions ADD CONSTRAINT security_decisions_scope_kind_check
    CHECK (scope_kind IN ('ip', 'prefix', 'api_key', 'account', 'device'));
