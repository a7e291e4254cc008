"""Entry point: `streamlit run dashboard.py`. Page config, identity, banner, navigation."""

import streamlit as st

from pages import _ui as ui

st.set_page_config(page_title="AWS billing", page_icon=":material/receipt_long:", layout="wide")

try:
    cfg = ui.settings()
    identity = ui.current_identity()
    ui.engine()  # opens and migrates the database once per process
except Exception as exc:
    ui.show_error(exc)
    st.stop()

if cfg.mode == "demo":
    st.info(
        "**Demo data.** No AWS or Stripe credentials are configured: figures come from the "
        "seeded demo database.",
        icon=":material/science:",
    )
if identity.method == "local":
    st.caption("No sign-in configured: this dashboard listens on localhost only (local use).")

# Only the pages this role may see; each page also checks the role itself.
PAGES: list[tuple[str, str, str, str]] = [
    # (file, title, icon, needed role)
    ("pages/overview.py", "Overview", ":material/dashboard:", "viewer"),
    ("pages/aws_costs.py", "AWS costs", ":material/cloud:", "viewer"),
]

allowed = [
    st.Page(path, title=title, icon=icon)
    for path, title, icon, needed in PAGES
    if identity.can(needed)  # type: ignore[arg-type]
]
if not allowed:
    st.warning("Please sign in to use the billing dashboard.")
    st.stop()
st.navigation(allowed).run()
