"""The local Stripe server's list pages (found from the cursor, not by scanning every object)
answer as a full scan would: newest first, filters applied, cursors of any object, deleted
objects left out, the same after a restart from a state file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from tests.support.stripe_server import StripeTestServer
from tests.support.stripe_server.persist import load_state, save_state


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server: StripeTestServer) -> None:
    server.reset()


def _client(server: StripeTestServer) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_local", base_addresses={"api": server.url}, max_network_retries=0
    )


def _world(server: StripeTestServer) -> dict[str, Any]:
    """Two customers (the second made half-way), 30 invoices of mixed status over two hours,
    three drafts deleted over HTTP."""
    first = server.create_customer_directly(email="a@example.com")["id"]
    second = ""
    made: list[str] = []
    for i in range(30):
        if i == 12:
            second = server.create_customer_directly(email="b@example.com")["id"]
        if i == 20:
            server.advance_clock(3600)
        customer = second if i >= 12 and i % 2 else first
        status = ("draft", "open", "paid")[i % 3]
        made.append(
            server.create_invoice_directly(customer, 100 + i, "usd", {"n": str(i)}, status=status)[
                "id"
            ]
        )
    client = _client(server)
    deleted = [made[0], made[15], made[27]]  # drafts (i % 3 == 0)
    for invoice_id in deleted:
        client.v1.invoices.delete(invoice_id)
    return {"first": first, "second": second, "deleted": deleted}


def _expected(server: StripeTestServer, params: dict[str, Any]) -> list[str]:
    """A full scan: every invoice the filters keep, newest first."""
    created = params.get("created", {})
    return [
        inv["id"]
        for inv in reversed(server.invoices())
        if params.get("customer", inv["customer"]) == inv["customer"]
        and params.get("status", inv["status"]) == inv["status"]
        and inv["created"] >= created.get("gte", inv["created"])
    ]


def _filters(server: StripeTestServer, world: dict[str, Any]) -> list[dict[str, Any]]:
    late = max(inv["created"] for inv in server.invoices())
    return [
        {},
        {"customer": world["first"]},
        {"customer": world["second"], "status": "paid"},
        {"status": "draft"},
        {"created": {"gte": late}},
        {"status": "void"},  # matches nothing
    ]


@pytest.mark.parametrize("limit", [1, 4, 100])
def test_every_page_matches_a_full_scan(server: StripeTestServer, limit: int) -> None:
    world = _world(server)
    client = _client(server)
    for filters in _filters(server, world):
        expected = _expected(server, filters)
        assert not set(world["deleted"]) & set(expected)
        # Forward with starting_after, page by page.
        got: list[str] = []
        params: dict[str, Any] = {**filters, "limit": limit}
        while True:
            page = client.v1.invoices.list(params)
            ids = [inv.id for inv in page.data]
            got += ids
            assert page.has_more == (len(got) < len(expected)), (filters, got)
            if not page.has_more:
                break
            params["starting_after"] = ids[-1]
        assert got == expected, filters
        # Backward with ending_before from every position: the `limit` newer ones.
        for i, cursor in enumerate(expected):
            page = client.v1.invoices.list({**filters, "limit": limit, "ending_before": cursor})
            assert [inv.id for inv in page.data] == expected[max(0, i - limit) : i]
            assert page.has_more == (i > limit)


def test_a_cursor_may_be_any_object_and_a_deleted_one(server: StripeTestServer) -> None:
    world = _world(server)
    client = _client(server)
    everything = _expected(server, {})
    # Invoices made before the second customer: those older than it (made 0..11, 0 deleted).
    older = client.v1.invoices.list({"limit": 100, "starting_after": world["second"]})
    assert [inv.id for inv in older.data] == everything[-11:]
    newer = client.v1.invoices.list({"limit": 100, "ending_before": world["second"]})
    assert [inv.id for inv in newer.data] == everything[:-11]
    # A deleted invoice still places the cursor (Stripe keeps it in the order).
    after_deleted = client.v1.invoices.list({"limit": 3, "starting_after": world["deleted"][1]})
    position = everything.index(server.invoices()[13]["id"])  # made 14 precedes made 15
    assert [inv.id for inv in after_deleted.data] == everything[position : position + 3]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.invoices.list({"starting_after": "in_nosuch"})
    assert "No such object" in str(err.value)


def test_customers_events_and_credit_notes_page_newest_first(server: StripeTestServer) -> None:
    world = _world(server)
    client = _client(server)
    customers = [c.id for c in client.v1.customers.list({"limit": 1}).auto_paging_iter()]
    assert customers == [world["second"], world["first"]]
    events = [e.id for e in client.v1.events.list({"limit": 2}).auto_paging_iter()]
    assert events == [e["id"] for e in reversed(server.events())]
    deleted = client.v1.events.list({"type": "invoice.deleted", "limit": 100})
    assert [e.data.object.id for e in deleted.data] == list(reversed(world["deleted"]))


def test_lists_read_the_same_after_a_restart_from_the_state_file(
    server: StripeTestServer, tmp_path: Path
) -> None:
    world = _world(server)
    client = _client(server)
    before = [inv.id for inv in client.v1.invoices.list({"limit": 7}).auto_paging_iter()]
    path = tmp_path / "stripe.json"
    save_state(server, path)
    with StripeTestServer() as other:
        assert load_state(other, path)
        again = _client(other).v1.invoices.list({"limit": 7, "customer": world["first"]})
        assert [inv.id for inv in again.auto_paging_iter()] == _expected(
            server, {"customer": world["first"]}
        )
        assert [
            inv.id for inv in _client(other).v1.invoices.list({"limit": 7}).auto_paging_iter()
        ] == before
