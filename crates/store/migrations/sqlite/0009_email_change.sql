-- An email change waiting for the new address to be confirmed: its keyed hash and the address
-- sealed under the customer's data key. The confirmation link is an address-check challenge
-- whose binding is the keyed hash of this pending address.
ALTER TABLE customers ADD COLUMN pending_email_lookup BLOB;
ALTER TABLE customers ADD COLUMN pending_email_sealed BLOB;
