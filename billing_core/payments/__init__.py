"""Stripe state after an invoice is out: events (sync and the webhook receiver), payment
methods (retry, setup links) and collections (the dunning policy, `dunning`, and the passes
that send reminders and mark invoices uncollectible, `collections`)."""
