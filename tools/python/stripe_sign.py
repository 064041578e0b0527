"""Signs a Stripe webhook body with the official `stripe` package.

Usage: stripe_sign.py SECRET TIMESTAMP < body; prints the Stripe-Signature header. When the
timestamp is within Stripe's tolerance of now, also checks that stripe.Webhook.construct_event
accepts it (the same verification Stripe's own libraries do).
"""
import sys
import time

import stripe

secret, timestamp = sys.argv[1], int(sys.argv[2])
payload = sys.stdin.buffer.read().decode('utf-8')
header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)
if abs(time.time() - timestamp) < stripe.Webhook.DEFAULT_TOLERANCE:
    event = stripe.Webhook.construct_event(payload, header, secret)
    assert event['id'], 'constructed'
print(header)
