-- The customer or staff member an audit entry concerns, so a security centre can show a person
-- their own history without scanning the log. Not part of the leaf: the tree does not change.
ALTER TABLE audit_entries ADD COLUMN subject TEXT;

CREATE INDEX audit_entries_by_subject ON audit_entries (merchant_id, subject, seq) WHERE subject IS NOT NULL;
