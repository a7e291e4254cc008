"""The local Stripe test server's credit notes and customer balance, driven through
stripe-python: Stripe's rules for amounts, refunds and balances, idempotency and faults."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from tests.support.stripe_schema import problems
from tests.support.stripe_server import StripeTestServer


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


@pytest.fixture
def client(server: StripeTestServer) -> stripe.StripeClient:
    server.reset()
    return stripe.StripeClient(
        "sk_test_cn", base_addresses={"api": server.url}, max_network_retries=0
    )


def _post(client: stripe.StripeClient, path: str, **params: Any) -> dict[str, Any]:
    data: dict[str, Any] = client.raw_request("post", path, **params).data
    return data


def _get(client: stripe.StripeClient, path: str, **params: Any) -> dict[str, Any]:
    data: dict[str, Any] = client.raw_request("get", path, **params).data
    return data


def _open_invoice(
    server: StripeTestServer, client: stripe.StripeClient, *amounts: int
) -> dict[str, Any]:
    cus = server.create_customer_directly(email="cn@example.com", name="CN")
    server.attach_card(cus["id"])
    inv = _post(client, "/v1/invoices", customer=cus["id"], currency="usd")
    lines = [{"amount": a, "description": f"line {i}"} for i, a in enumerate(amounts)]
    _post(client, f"/v1/invoices/{inv['id']}/add_lines", lines=lines)
    return _post(client, f"/v1/invoices/{inv['id']}/finalize")


def test_a_credit_note_on_an_open_invoice_lowers_what_is_due(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    inv = _open_invoice(server, client, 1000, 500)
    line = inv["lines"]["data"][0]["id"]
    params: dict[str, Any] = {
        "invoice": inv["id"],
        "lines": [{"type": "invoice_line_item", "invoice_line_item": line, "amount": 300}],
        "reason": "order_change",
    }
    preview = _get(client, "/v1/credit_notes/preview", **params)
    assert (preview["amount"], preview["pre_payment_amount"]) == (300, 300)
    assert server.credit_notes() == []  # a preview stores nothing
    note = _post(client, "/v1/credit_notes", **params, memo="Fewer seats")
    assert note["type"] == "pre_payment" and note["number"].endswith("-CN-01")
    after = _get(client, f"/v1/invoices/{inv['id']}")
    assert (after["total"], after["amount_due"], after["amount_remaining"]) == (1500, 1200, 1200)
    assert after["pre_payment_credit_notes_amount"] == 300
    assert not problems(note) and not problems(preview) and not problems(after)


def test_the_line_and_the_invoice_cannot_be_credited_beyond_what_is_left(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    inv = _open_invoice(server, client, 1000, 500)
    line = inv["lines"]["data"][1]["id"]
    _post(client, "/v1/credit_notes", invoice=inv["id"], amount=1000)
    with pytest.raises(stripe.InvalidRequestError, match="left to credit on it"):
        _post(
            client,
            "/v1/credit_notes",
            invoice=inv["id"],
            lines=[{"type": "invoice_line_item", "invoice_line_item": line, "amount": 501}],
        )
    with pytest.raises(stripe.InvalidRequestError, match=r"amount left to credit .* \(500\)"):
        _post(client, "/v1/credit_notes", invoice=inv["id"], amount=501)
    whole = _post(client, "/v1/credit_notes", invoice=inv["id"], amount=500)
    paid = _get(client, f"/v1/invoices/{inv['id']}")
    assert whole["pre_payment_amount"] == 500
    assert (paid["status"], paid["amount_remaining"], paid["amount_paid"]) == ("paid", 0, 0)


def test_drafts_and_void_invoices_take_no_credit_note(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    inv = _open_invoice(server, client, 1000)
    server.void(inv["id"])
    with pytest.raises(stripe.InvalidRequestError, match="this invoice is void"):
        _post(client, "/v1/credit_notes", invoice=inv["id"], amount=100)


def test_a_paid_invoice_splits_refund_balance_credit_and_out_of_band(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    inv = _open_invoice(server, client, 1000)
    _post(client, f"/v1/invoices/{inv['id']}/pay")
    with pytest.raises(stripe.InvalidRequestError, match="must equal"):
        _post(client, "/v1/credit_notes", invoice=inv["id"], amount=400, refund_amount=100)
    note = _post(
        client,
        "/v1/credit_notes",
        invoice=inv["id"],
        amount=400,
        refund_amount=100,
        credit_amount=200,
        out_of_band_amount=100,
    )
    assert note["type"] == "post_payment" and note["refunds"][0]["amount_refunded"] == 100
    charge = server.charges()[0]
    assert charge["amount_refunded"] == 100
    customer = _get(client, f"/v1/customers/{inv['customer']}")
    assert customer["balance"] == -200
    txns = _get(client, f"/v1/customers/{inv['customer']}/balance_transactions")
    assert [(t["type"], t["amount"]) for t in txns["data"]] == [("credit_note", -200)]
    after = _get(client, f"/v1/invoices/{inv['id']}")
    assert after["post_payment_credit_notes_amount"] == 400 and after["status"] == "paid"
    assert not problems(note) and not problems(txns) and not problems(customer)
    # The balance pays what it can of the next invoice when it is finalized.
    nxt = _post(client, "/v1/invoices", customer=inv["customer"], currency="usd")
    _post(client, f"/v1/invoices/{nxt['id']}/add_lines", lines=[{"amount": 700}])
    nxt = _post(client, f"/v1/invoices/{nxt['id']}/finalize")
    assert (nxt["starting_balance"], nxt["amount_due"]) == (-200, 500)
    assert _get(client, f"/v1/customers/{inv['customer']}")["balance"] == 0


def test_void_gives_back_what_the_note_took(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    inv = _open_invoice(server, client, 1000)
    note = _post(client, "/v1/credit_notes", invoice=inv["id"], amount=250)
    voided = _post(client, f"/v1/credit_notes/{note['id']}/void")
    assert voided["status"] == "void"
    after = _get(client, f"/v1/invoices/{inv['id']}")
    assert (after["amount_remaining"], after["pre_payment_credit_notes_amount"]) == (1000, 0)
    listed = _get(client, "/v1/credit_notes", invoice=inv["id"])
    assert [n["status"] for n in listed["data"]] == ["void"] and not problems(listed)


def test_a_replayed_key_issues_one_note_and_a_fault_issues_none(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    inv = _open_invoice(server, client, 1000)
    server.fail_next(1, 500, path_contains="/v1/credit_notes", method="POST")
    with pytest.raises(stripe.APIError):
        _post(client, "/v1/credit_notes", invoice=inv["id"], amount=100)
    assert server.credit_notes() == []
    opts: Any = {"idempotency_key": "cn-1"}
    first = _post(client, "/v1/credit_notes", invoice=inv["id"], amount=100, **opts)
    second = _post(client, "/v1/credit_notes", invoice=inv["id"], amount=100, **opts)
    assert first["id"] == second["id"] and len(server.credit_notes()) == 1


def test_the_server_takes_only_parameters_stripe_python_knows() -> None:
    """The accepted parameter names are those of stripe-python's typed params (generated from
    Stripe's OpenAPI specification), so a request the product builds that real Stripe would
    refuse for an unknown parameter is refused here too."""
    from stripe.params import (
        CreditNoteCreateParams,
        CreditNoteListParams,
        CustomerBalanceTransactionCreateParams,
    )
    from stripe.params._credit_note_create_params import CreditNoteCreateParamsLine

    from tests.support.stripe_server import credit_notes as server_cn

    assert set(server_cn._CREATE_FIELDS) <= set(CreditNoteCreateParams.__annotations__)
    assert set(server_cn._LINE_FIELDS) <= set(CreditNoteCreateParamsLine.__annotations__)
    assert {"invoice", "customer", "created", "limit"} <= set(CreditNoteListParams.__annotations__)
    assert {"amount", "currency", "description", "metadata"} <= set(
        CustomerBalanceTransactionCreateParams.__annotations__
    )
    assert set(server_cn.REASONS) == {
        "duplicate",
        "fraudulent",
        "order_change",
        "product_unsatisfactory",
    }
