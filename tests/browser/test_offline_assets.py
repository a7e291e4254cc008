"""Every asset the dashboard loads, favicon included, comes from the dashboard's own server."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import Page, Request, expect

from pages.common.registry import PAGES
from tests.browser.conftest import go_to, open_page

_LOCAL = {"127.0.0.1", "localhost"}


def test_every_page_loads_without_internet(page: Page) -> None:
    outside: list[str] = []

    def note(request: Request) -> None:
        url = urlsplit(request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in _LOCAL:
            outside.append(request.url)

    page.on("request", note)
    open_page(page, "/")
    for _path, title, _icon, _needed in PAGES:
        go_to(page, title)
    icon = page.locator("link[rel='shortcut icon']")
    expect(icon).to_have_count(1)
    href = icon.get_attribute("href") or ""
    assert urlsplit(href).hostname in _LOCAL | {None}, href
    assert outside == [], outside
