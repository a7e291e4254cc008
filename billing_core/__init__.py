"""Billing core: AWS costs, usage and Stripe invoicing, without any UI code."""

__version__ = "0.1.0"
