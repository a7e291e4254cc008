"""Invoicing: pricing a customer's month, drafts, the push of each draft to Stripe, invoice
runs (lock, worker, history) and the accounting CSV export.

shared_costs.py (pure) splits the month's shared AWS pool among the customers by
SHARED_COST_RULE, in USD cents by largest remainder; each share is priced as a
"Shared AWS costs" line (pricing.py) and reconciled like the other AWS lines."""
