"""Customers and plans: the customers CSV import, plans, plan versions and assignments, and the
effective-dated terms (plan, currency, AWS accounts, tag value) that price each month."""
