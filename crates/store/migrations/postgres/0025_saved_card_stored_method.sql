-- The gateway's own handle on a saved card, from its first payment (Stripe: `stripe:cus_…:pm_…`,
-- its Customer and the PaymentMethod attached to it), given back with the card's later payments
-- so the gateway links them to the first one for the card networks. Never a card number; never
-- shown by the API. NULL for cards saved through a gateway that gives none (the sandbox).
ALTER TABLE saved_cards ADD COLUMN stored_method TEXT;
