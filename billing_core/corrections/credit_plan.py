"""Planning a credit note: the request (`CreditAsk`), its checks and its split (pure of Stripe
calls; reads the database and, when given, Stripe's state of the invoice).

Refused with a sentence (nothing is written or sent): an invoice that is a draft or void, an
amount in another currency or with more digits than the currency has, more than is left to
credit on the invoice (its total less issued credit notes and those being issued) or on the
line, a quantity beyond the line's, a paid invoice without a settlement, a refund larger than
what is left of the payment, an invoice being voided. Amounts are minor units.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from sqlmodel import Session, col, func, select

from billing_core.errors import MoneyError, ValidationError
from billing_core.models import CreditNote, CreditNoteLine, Invoice, InvoiceLine, InvoiceVoid
from billing_core.money import (
    display,
    exponent,
    minor_to_decimal,
    normalize_currency,
    round_minor,
    to_decimal,
)
from billing_core.states import (
    CreditNoteReason,
    CreditNoteStatus,
    CreditSettlement,
    InvoiceStatus,
    VoidStep,
)
from billing_core.stripe.mapping import StripeInvoice

Mode = Literal["full", "amount", "line"]
# Counted against what is left to credit: issued notes and those being issued.
_COUNTED = (CreditNoteStatus.ISSUED, CreditNoteStatus.ISSUING)


@dataclass(frozen=True)
class CreditAsk:
    """What an admin asks for. `amount` is text in major units, optionally with the currency
    ('12.50' or '12.50 EUR'); `line` is the invoice line's number as shown (1 = first)."""

    invoice: str  # the invoice number (Stripe's), or #<local id>
    mode: Mode
    reason: str
    amount: str | None = None
    line: int | None = None
    quantity: int | None = None
    settlement: str | None = None
    memo: str | None = None

    def digest(self, invoice_id: int) -> str:
        """The request's identity: the same ask on the same invoice is the same credit note."""
        text = json.dumps(
            [invoice_id, self.mode, self.reason, self.amount, self.line, self.quantity,
             self.settlement, (self.memo or "").strip()],
        )  # fmt: skip
        return hashlib.sha256(text.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class PlannedLine:
    description: str
    amount_minor: int
    invoice_line_id: int | None = None
    quantity: int | None = None


@dataclass
class CreditPlan:
    """A checked credit note, split as Stripe will split it (minor units)."""

    invoice_id: int
    invoice_number: str
    stripe_invoice_id: str
    customer_id: int
    currency: str
    reason: CreditNoteReason
    memo: str | None
    lines: list[PlannedLine]
    amount_minor: int
    pre_payment_minor: int
    post_payment_minor: int
    settlement: CreditSettlement | None
    left_before_minor: int  # what was left to credit before this note
    request_key: str
    stripe_lines: list[str | None] = field(default_factory=list)

    @property
    def split(self) -> tuple[int, int, int]:
        """(refund, customer balance, out of band) of the post-payment part."""
        post = self.post_payment_minor
        return (
            post if self.settlement == CreditSettlement.REFUND else 0,
            post if self.settlement == CreditSettlement.CUSTOMER_BALANCE else 0,
            post if self.settlement == CreditSettlement.OUT_OF_BAND else 0,
        )

    def describe(self) -> str:
        """'EUR 30.00 on invoice ABC-0001: EUR 30.00 off the amount due' and so on."""
        cur = self.currency
        parts = []
        if self.pre_payment_minor:
            parts.append(f"{display(self.pre_payment_minor, cur)} off the amount due")
        if self.post_payment_minor and self.settlement is not None:
            where = {
                CreditSettlement.REFUND: "refunded to the payment method",
                CreditSettlement.CUSTOMER_BALANCE: "credited to the customer's balance",
                CreditSettlement.OUT_OF_BAND: "settled outside Stripe",
            }[self.settlement]
            parts.append(f"{display(self.post_payment_minor, cur)} {where}")
        after = display(self.left_before_minor - self.amount_minor, cur)
        return (
            f"{display(self.amount_minor, cur)} on invoice {self.invoice_number}: "
            + "; ".join(parts)
            + f" (left to credit afterwards: {after})"
        )


def find_invoice(session: Session, ref: str) -> Invoice:
    """The invoice by Stripe number or '#<id>'; ValidationError naming what to do otherwise."""
    text = (ref or "").strip()
    invoice = None
    if text.startswith("#") and text[1:].isdigit():
        invoice = session.get(Invoice, int(text[1:]))
    elif text:
        invoice = session.exec(select(Invoice).where(Invoice.number == text)).first()
    if invoice is None:
        raise ValidationError(
            f"There is no invoice numbered {text!r}: give the number Stripe printed on it "
            "(as the Invoices page shows it), or #<id> for the local id."
        )
    return invoice


def parse_amount(text: str, currency: str) -> int:
    parts = text.strip().split()
    if len(parts) == 2:
        given = parts[1] if not parts[0].isalpha() else parts[0]
        number = parts[0] if given == parts[1] else parts[1]
        try:
            if normalize_currency(given) != currency:
                raise ValidationError(
                    f"The invoice is in {currency}, not {given.upper()}: a credit note is in the "
                    "invoice's currency; give the amount in it."
                )
        except MoneyError:
            raise ValidationError(f"{given!r} is not a currency code.") from None
    elif len(parts) == 1:
        number = parts[0]
    else:
        raise ValidationError(f"{text!r} is not an amount such as 12.50 or 12.50 {currency}.")
    try:
        value = to_decimal(number)
    except MoneyError:
        raise ValidationError(f"{number!r} is not an amount such as 12.50.") from None
    minor = round_minor(value, currency)
    if minor_to_decimal(minor, currency) != value:
        raise ValidationError(
            f"{number} is not an amount {currency} can be charged in (at most "
            f"{exponent(currency)} decimals, in steps Stripe takes); give it as Stripe would."
        )
    if minor <= 0:
        raise ValidationError("A credit note's amount must be more than zero.")
    return minor


def credited_minor(session: Session, invoice_id: int) -> int:
    total = session.exec(
        select(func.coalesce(func.sum(CreditNote.amount_minor), 0)).where(
            CreditNote.invoice_id == invoice_id, col(CreditNote.status).in_(_COUNTED)
        )
    ).one()
    return int(total)


def credited_by_line(session: Session, invoice_id: int) -> dict[int, int]:
    rows = session.exec(
        select(CreditNoteLine.invoice_line_id, func.sum(CreditNoteLine.amount_minor))
        .join(CreditNote, col(CreditNote.id) == CreditNoteLine.credit_note_id)
        .where(CreditNote.invoice_id == invoice_id, col(CreditNote.status).in_(_COUNTED))
        .group_by(col(CreditNoteLine.invoice_line_id))
    ).all()
    return {int(lid): int(total) for lid, total in rows if lid is not None}


def refuse_state(invoice: Invoice, label: str) -> None:
    if invoice.is_demo:
        raise ValidationError(
            f"Invoice {label} is a demo record, not a Stripe invoice: it cannot be corrected."
        )
    if invoice.status == InvoiceStatus.DRAFT or not invoice.stripe_invoice_id:
        raise ValidationError(
            f"Invoice {label} is a draft that was never issued: there is nothing to credit; "
            "correct the draft or wait for the run to issue it."
        )
    if invoice.status == InvoiceStatus.VOID:
        raise ValidationError(f"Invoice {label} is void: it bills nothing, so it takes no credit.")


def plan(session: Session, ask: CreditAsk, remote: StripeInvoice | None = None) -> CreditPlan:
    """Check `ask` against the invoice (and Stripe's state of it, when given); nothing written.

    ValidationError with a sentence for anything Stripe would refuse or we must not send.
    """
    invoice = find_invoice(session, ask.invoice)
    label = invoice.number or f"#{invoice.id}"
    refuse_state(invoice, label)
    if remote is not None and remote.status in (InvoiceStatus.VOID, InvoiceStatus.DRAFT):
        raise ValidationError(f"Invoice {label} is {remote.status} in Stripe: nothing to credit.")
    try:
        reason = CreditNoteReason(ask.reason)
    except ValueError:
        choices = ", ".join(r.value for r in CreditNoteReason)
        raise ValidationError(f"Reason {ask.reason!r} is not one of Stripe's: {choices}.") from None
    cur = invoice.currency
    iid = invoice.id or 0
    pending = session.exec(select(InvoiceVoid).where(InvoiceVoid.invoice_id == iid)).first()
    if pending is not None and pending.step == VoidStep.REQUESTED:
        raise ValidationError(f"Invoice {label} is being voided: it takes no credit note now.")
    stripe_credited = 0
    if remote is not None:
        stripe_credited = remote.pre_payment_credit_notes + remote.post_payment_credit_notes
    left = invoice.total_minor - max(credited_minor(session, iid), stripe_credited)
    lines = list(
        session.exec(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id == iid)
            .order_by(col(InvoiceLine.position))
        ).all()
    )
    by_line = credited_by_line(session, iid)
    planned: list[PlannedLine] = []
    if ask.mode == "full":
        if left <= 0:
            raise ValidationError(f"Invoice {label} is credited in full already.")
        whole = (
            not by_line and left == invoice.total_minor and all(li.amount_minor > 0 for li in lines)
        )
        if whole and lines:
            planned = [PlannedLine(li.description, li.amount_minor, li.id) for li in lines]
        else:
            planned = [PlannedLine(f"Credit of what is left of invoice {label}", left)]
    elif ask.mode == "amount":
        amount = parse_amount(ask.amount or "", cur)
        planned = [PlannedLine(ask.memo or f"Credit on invoice {label}", amount)]
    else:
        if ask.line is None or not 1 <= ask.line <= len(lines):
            raise ValidationError(
                f"Invoice {label} has lines 1 to {len(lines)}; --line {ask.line} is not one."
            )
        line = lines[ask.line - 1]
        line_left = line.amount_minor - by_line.get(line.id or 0, 0)
        if ask.quantity is not None:
            if ask.quantity <= 0 or Decimal(ask.quantity) > line.quantity:
                raise ValidationError(
                    f"Line {ask.line} bills a quantity of {line.quantity}; credit 1 to "
                    f"{line.quantity} of it."
                )
            amount = round_minor(line.unit_amount * ask.quantity, cur)
        else:
            amount = parse_amount(ask.amount or "", cur)
        if amount > line_left:
            raise ValidationError(
                f"{display(amount, cur)} is more than is left to credit on line {ask.line} "
                f"({line.description}): {display(max(line_left, 0), cur)}."
            )
        planned = [PlannedLine(line.description, amount, line.id, ask.quantity)]
    amount = sum(p.amount_minor for p in planned)
    if amount > left:
        raise ValidationError(
            f"{display(amount, cur)} is more than is left to credit on invoice {label}: "
            f"{display(max(left, 0), cur)} (total {display(invoice.total_minor, cur)}, credited "
            f"{display(invoice.total_minor - left, cur)})."
        )
    paid = (
        remote.status == InvoiceStatus.PAID
        if remote is not None
        else (invoice.status == InvoiceStatus.PAID)
    )
    still_due = (
        0 if paid else (remote.amount_remaining if remote is not None else invoice.due_minor)
    )
    pre = min(amount, still_due)
    post = amount - pre
    settlement = CreditSettlement(ask.settlement) if ask.settlement else None
    if post and settlement is None:
        raise ValidationError(
            f"Invoice {label} is paid ({display(post, cur)} of this credit goes back to the "
            "customer): choose a refund, a credit to the customer's balance, or out of band."
        )
    if settlement == CreditSettlement.REFUND and post:
        refundable = invoice.amount_paid_minor - invoice.amount_refunded_minor
        if post > refundable:
            raise ValidationError(
                f"Only {display(max(refundable, 0), cur)} of invoice {label}'s payment can still "
                "be refunded; credit the customer's balance or settle out of band instead."
            )
    if not post:
        settlement = None  # nothing was paid: the credit lowers the amount due
    return CreditPlan(
        invoice_id=iid,
        invoice_number=label,
        stripe_invoice_id=invoice.stripe_invoice_id or "",
        customer_id=invoice.customer_id,
        currency=cur,
        reason=reason,
        memo=(ask.memo or "").strip() or None,
        lines=planned,
        amount_minor=amount,
        pre_payment_minor=pre,
        post_payment_minor=post,
        settlement=settlement,
        left_before_minor=left,
        request_key=ask.digest(iid),
    )
