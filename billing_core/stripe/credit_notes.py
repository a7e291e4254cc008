"""Stripe credit notes: preview, create, find by metadata, void; the invoice void.

The request is a `CreditNoteRequest` (what to credit and where the paid part goes); Stripe's
answer is read into a `StripeCreditNote`. Nothing outside this module spells Stripe's credit
note field names. Writes take their idempotency key from keys.py; failures are StripeFailure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from billing_core.stripe.gateway import JSON, Gateway
from billing_core.stripe.mapping import SOURCE, StripeInvoice, parse_invoice

PAGE_SIZE = 100


@dataclass(frozen=True)
class NoteLine:
    """Part of an invoice line (its Stripe line id, an amount or a whole quantity), or a custom
    amount when `stripe_line_id` is None. Amounts are minor units."""

    description: str
    amount_minor: int | None = None
    quantity: int | None = None
    stripe_line_id: str | None = None


@dataclass(frozen=True)
class CreditNoteRequest:
    """What a credit note asks of Stripe (minor units of the invoice's currency).

    `refund_minor + balance_minor + out_of_band_minor` must equal the part of the credit that
    exceeds what is still due on the invoice (Stripe's post-payment amount).
    """

    invoice: str
    reason: str
    lines: tuple[NoteLine, ...]
    memo: str | None = None
    refund_minor: int = 0
    balance_minor: int = 0
    out_of_band_minor: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)

    def params(self, *, with_metadata: bool = True) -> dict[str, Any]:
        lines: list[dict[str, Any]] = []
        for line in self.lines:
            if line.stripe_line_id is None:
                lines.append(
                    {
                        "type": "custom_line_item",
                        "description": line.description,
                        "quantity": 1,
                        "unit_amount": line.amount_minor,
                    }
                )
            elif line.quantity is not None:
                lines.append(
                    {
                        "type": "invoice_line_item",
                        "invoice_line_item": line.stripe_line_id,
                        "quantity": line.quantity,
                    }
                )
            else:
                lines.append(
                    {
                        "type": "invoice_line_item",
                        "invoice_line_item": line.stripe_line_id,
                        "amount": line.amount_minor,
                    }
                )
        params: dict[str, Any] = {"invoice": self.invoice, "reason": self.reason, "lines": lines}
        if self.memo:
            params["memo"] = self.memo
        for name, value in (
            ("refund_amount", self.refund_minor),
            ("credit_amount", self.balance_minor),
            ("out_of_band_amount", self.out_of_band_minor),
        ):
            if value:
                params[name] = value
        if with_metadata and self.metadata:
            params["metadata"] = dict(self.metadata)
        return params


@dataclass(frozen=True)
class StripeCreditNote:
    """A Stripe credit note as this project reads it (minor units)."""

    id: str
    number: str | None
    status: str  # issued or void
    total: int
    pre_payment: int
    post_payment: int
    refunded: int
    balance: int  # credited to the customer's balance (0 when none)
    out_of_band: int
    pdf: str | None
    local_id: int | None
    install_id: str | None
    lines: tuple[tuple[str, int], ...]
    invoice: str | None = None  # the Stripe invoice it credits


def parse_credit_note(obj: Mapping[str, Any]) -> StripeCreditNote:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    local = str(meta.get("local_credit_note_id") or "")
    refunds = obj.get("refunds") or []
    refunded = sum(int(r.get("amount_refunded") or 0) for r in refunds if isinstance(r, Mapping))
    post = int(obj.get("post_payment_amount") or 0)
    out_of_band = int(obj.get("out_of_band_amount") or 0)
    lines: Mapping[str, Any] = obj.get("lines") or {}
    return StripeCreditNote(
        id=str(obj.get("id") or ""),
        number=obj.get("number") or None,
        status=str(obj.get("status") or "issued"),
        total=int(obj.get("total") or obj.get("amount") or 0),
        pre_payment=int(obj.get("pre_payment_amount") or 0),
        post_payment=post,
        refunded=refunded,
        # Stripe names the balance transaction, not its amount: what is left of the post part.
        balance=post - refunded - out_of_band if obj.get("customer_balance_transaction") else 0,
        out_of_band=out_of_band,
        pdf=obj.get("pdf") or None,
        local_id=int(local) if local.isdigit() else None,
        install_id=str(meta["install_id"]) if meta.get("install_id") else None,
        lines=tuple(
            (str(li.get("description") or ""), int(li.get("amount") or 0))
            for li in lines.get("data") or []
        ),
        invoice=_id_of(obj.get("invoice")),
    )


def _id_of(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    return str(value) if value else None


def read_credit_note(gw: Gateway, credit_note: str) -> StripeCreditNote:
    doing = f"reading Stripe credit note {credit_note}"
    return parse_credit_note(gw.request("get", f"/v1/credit_notes/{credit_note}", doing=doing))


def credit_note_metadata(
    *, credit_note_id: int, invoice_id: int, install_id: str
) -> dict[str, str]:
    return {
        "local_credit_note_id": str(credit_note_id),
        "local_invoice_id": str(invoice_id),
        "install_id": install_id,
        "source": SOURCE,
    }


def preview(gw: Gateway, request: CreditNoteRequest) -> StripeCreditNote:
    """What Stripe would issue (nothing is created); StripeFailure when Stripe refuses it."""
    doing = f"previewing a credit note on Stripe invoice {request.invoice}"
    params = request.params(with_metadata=False)
    return parse_credit_note(gw.request("get", "/v1/credit_notes/preview", params, doing=doing))


def create(gw: Gateway, request: CreditNoteRequest, *, key: str) -> StripeCreditNote:
    doing = f"issuing a credit note on Stripe invoice {request.invoice}"
    obj = gw.request("post", "/v1/credit_notes", request.params(), key=key, doing=doing)
    return parse_credit_note(obj)


def find(
    gw: Gateway, *, invoice: str, local_credit_note_id: int, install_id: str
) -> StripeCreditNote | None:
    """The Stripe credit note made for a local one (by metadata), if an earlier try made it."""
    doing = f"looking up the credit notes of Stripe invoice {invoice}"
    for obj in gw.pages("/v1/credit_notes", {"invoice": invoice, "limit": PAGE_SIZE}, doing=doing):
        found = parse_credit_note(obj)
        if found.local_id == local_credit_note_id and found.install_id in (None, install_id):
            return found
    return None


def of_invoice(gw: Gateway, invoice: str) -> list[StripeCreditNote]:
    doing = f"listing the credit notes of Stripe invoice {invoice}"
    params = {"invoice": invoice, "limit": PAGE_SIZE}
    return [parse_credit_note(o) for o in gw.pages("/v1/credit_notes", params, doing=doing)]


def void_credit_note(gw: Gateway, credit_note: str, *, key: str) -> StripeCreditNote:
    doing = f"voiding Stripe credit note {credit_note}"
    path = f"/v1/credit_notes/{credit_note}/void"
    return parse_credit_note(gw.request("post", path, key=key, doing=doing))


def void_invoice(gw: Gateway, invoice: str, *, key: str) -> StripeInvoice:
    """Void an open or uncollectible Stripe invoice (StripeFailure otherwise)."""
    doing = f"voiding Stripe invoice {invoice}"
    obj: JSON = gw.request("post", f"/v1/invoices/{invoice}/void", key=key, doing=doing)
    return parse_invoice(obj)


def invoice_line_ids(gw: Gateway, invoice: str) -> list[tuple[str, str, int]]:
    """(Stripe line id, description, amount) of every line of a Stripe invoice, in order."""
    doing = f"reading the lines of Stripe invoice {invoice}"
    params = {"limit": PAGE_SIZE}
    return [
        (str(li["id"]), str(li.get("description") or ""), int(li.get("amount") or 0))
        for li in gw.pages(f"/v1/invoices/{invoice}/lines", params, doing=doing)
    ]
