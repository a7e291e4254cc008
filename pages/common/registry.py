"""The dashboard's pages and the role each needs. Not a page: no Streamlit here.

dashboard.py builds st.navigation from this table and the tests walk it, so a page added here
is checked for every identity automatically. Each page also guards itself (ui.page_setup).
"""

from __future__ import annotations

from billing_core.auth import Role

# (file, title, icon, needed role)
PAGES: list[tuple[str, str, str, Role]] = [
    ("pages/overview.py", "Overview", ":material/dashboard:", "viewer"),
    ("pages/customer.py", "Customer", ":material/person:", "viewer"),
    ("pages/aws_costs.py", "AWS costs", ":material/cloud:", "viewer"),
    ("pages/invoices.py", "Invoices", ":material/request_quote:", "viewer"),
    ("pages/usage.py", "Usage vs plan limits", ":material/speed:", "viewer"),
    ("pages/reconciliation.py", "Reconciliation", ":material/balance:", "viewer"),
    ("pages/collections.py", "Collections", ":material/notifications_active:", "viewer"),
    ("pages/invoice_run.py", "Invoice run", ":material/receipt_long:", "admin"),
    ("pages/customers.py", "Customers and plans", ":material/group:", "admin"),
    ("pages/audit.py", "Audit log", ":material/history:", "admin"),
]
