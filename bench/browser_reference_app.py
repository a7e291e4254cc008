"""The reference for bench/bench_browser.py: the most trivial Streamlit app with two pages.

Served by the same Streamlit and measured in the same chromium as the dashboard, so the time
to interactive of a page holding one title and one st.write is the floor every dashboard page
stands on (Streamlit's own websocket round trip, script run and drawing).
"""

import streamlit as st

st.set_page_config(page_title="Reference", layout="wide")


def reference() -> None:
    st.title("Reference")
    st.write("One line of text.")


def elsewhere() -> None:
    st.title("Elsewhere")


st.navigation([st.Page(reference, title="Reference"), st.Page(elsewhere, title="Elsewhere")]).run()
