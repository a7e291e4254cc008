"""The Stripe Events API, a page at a time (billing_core.payments.sync walks it)."""

from __future__ import annotations

from typing import Any

from billing_core.stripe.gateway import JSON, Gateway

# Stripe's maximum page size for list endpoints.
EVENTS_PAGE_SIZE = 100


def events_page(
    gw: Gateway,
    *,
    ending_before: str | None = None,
    starting_after: str | None = None,
    limit: int = EVENTS_PAGE_SIZE,
) -> tuple[list[JSON], bool]:
    """One page of events, newest first, and whether more exist in that direction.

    `ending_before=<id>` pages towards newer events (the page holds those just after <id>);
    `starting_after=<id>` pages towards older ones.
    """
    params: dict[str, Any] = {"limit": limit}
    if ending_before:
        params["ending_before"] = ending_before
    if starting_after:
        params["starting_after"] = starting_after
    page = gw.request("get", "/v1/events", params, doing="listing Stripe events")
    return list(page.get("data") or []), bool(page.get("has_more"))
