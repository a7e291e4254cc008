"""Entry point: `streamlit run dashboard.py`. Page config, sign-in, role, navigation."""

from pathlib import Path

import streamlit as st

from billing_core.auth import Identity
from pages.common import ui
from pages.common.registry import PAGES

# A file of ours rather than a ":material/...:" icon: Streamlit's browser code fetches those
# favicons from fonts.gstatic.com, and the dashboard loads everything without internet.
FAVICON = str(Path(__file__).parent / "assets" / "favicon.png")
st.set_page_config(page_title="AWS billing", page_icon=FAVICON, layout="wide")


def sign_in() -> None:
    # The only page for people without a role: page_setup shows the sign-in or no-access
    # screen and stops, so every URL lands here and no other page name is listed.
    ui.page_setup("AWS billing")


identity: Identity | None
try:
    identity = ui.current_identity()
except Exception:
    identity = None  # page_setup below shows why, as a sentence

allowed = ui.app_pages(
    [(path, title, icon) for path, title, icon, role in PAGES if identity and identity.can(role)]
)
if not allowed:
    st.navigation([st.Page(sign_in, title="Sign in", icon=":material/login:")]).run()
    st.stop()

with ui.stop_on_error():
    ui.engine()  # opens and migrates the database once per process

st.navigation(allowed).run()
