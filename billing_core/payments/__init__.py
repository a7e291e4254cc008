"""Stripe state after an invoice is out: events (sync and the webhook receiver) and
payment methods (retry, setup links)."""
