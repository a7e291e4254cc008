"""Reconciliation: gather local and Stripe records, diff them (pure), store runs and
findings, and resolve diffs."""
