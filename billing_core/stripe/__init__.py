"""Stripe: the only code that imports `stripe`.

client.py (key, pinned API version, rate), gateway.py (the one Gateway: rate limiter, retry
and 429 policy, counting), errors.py (wording, the closed HARMLESS list), keys.py (idempotency
keys with the install-id namespace), mapping.py (Stripe objects to local rows, metadata),
and the calls by resource: invoices.py, customers.py, payments.py, events.py.
"""
