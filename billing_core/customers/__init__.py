"""Customers and plans: the customers CSV import, plans, plan versions and assignments."""
