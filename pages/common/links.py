"""Links from one page to another, already filtered (query parameters). Not a page.

`link` is st.page_link (same tab, keeps the session) when the page runs under the dashboard's
navigation; a page opened on its own (an AppTest of the page file) has no
navigation to resolve a file against, so the same link is drawn as a plain markdown link to
the page's URL instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import streamlit as st
from streamlit.errors import StreamlitAPIException


def page_url(page: str, params: Mapping[str, str | int] | None = None) -> str:
    """'invoices?status=open' for ('pages/invoices.py', {'status': 'open'}): the URL path
    st.navigation gives a page (its file name), relative to the app's root."""
    slug = Path(page).stem
    query = urlencode({k: str(v) for k, v in (params or {}).items()})
    return f"{slug}?{query}" if query else slug


def link(
    page: str,
    label: str,
    params: Mapping[str, str | int] | None = None,
    *,
    help: str | None = None,
    icon: str | None = ":material/arrow_forward:",
    where: Any = None,
) -> None:
    """A link to `page` (a file under pages/) opened with `params`, drawn in `where` (a
    container or column; default: the page)."""
    target = where if where is not None else st
    query = {k: str(v) for k, v in (params or {}).items()}
    try:
        target.page_link(page, label=label, query_params=query or None, help=help, icon=icon)
    except StreamlitAPIException:
        target.markdown(f"[{label}](/{page_url(page, query)})", help=help)
