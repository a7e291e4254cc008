"""Stripe: the only code that imports `stripe`. One client and gateway (rate limit, retries,
error wording), idempotency keys, and the mapping from Stripe objects to local rows."""
