"""Invoicing: pricing a customer's month, drafts, the push of each draft to Stripe, invoice
runs (lock, worker, history) and the accounting CSV export."""
