"""Re-linking a customer whose Stripe customer was deleted: re-create it, or link another one.

A customer deleted in Stripe fails every invoice push ("No such customer") until its link is
repaired. `relink_customer` makes the link point at a live Stripe customer, then frees the
customer's unfinished invoices (drafts not pushed yet, pushes stopped half way, failed
payments) from the deleted one, so the next invoice run pushes them to the new customer:

- a Stripe invoice they left on the old customer loses our metadata (so events about it can no
  longer be mistaken for the local invoice) and is voided (open) or deleted (draft);
- locally the invoice goes back to an unpushed draft with `key_generation` bumped, so every push
  step gets an idempotency key Stripe has not seen (the old ones would replay the old invoice).

Every Stripe write carries a key from stripe/keys.py and the database is written once at the
end, in one transaction with its audit entry, so a killed relink is simply run again: the
re-created customer is found by its metadata (or replayed by its key), retired invoices are
replayed. A second identical relink finds the link live and changes nothing. Invoices that are
paid, void, uncollectible or sent and merely unpaid are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.db import session_scope
from billing_core.errors import ValidationError
from billing_core.models import Customer, Invoice
from billing_core.states import InvoiceOutcome, InvoiceStatus, PushStep
from billing_core.stripe import customers as stripe_customers
from billing_core.stripe import invoices as stripe_invoices
from billing_core.stripe.gateway import JSON, Gateway
from billing_core.stripe.keys import Keys, keys_for


@dataclass
class RelinkResult:
    customer: str
    old_stripe_id: str | None
    new_stripe_id: str
    changed: bool
    invoices_freed: list[int] = field(default_factory=list)

    def describe(self) -> str:
        if not self.changed:
            return f"{self.customer} is already linked to {self.new_stripe_id}: nothing to do"
        freed = len(self.invoices_freed)
        return (
            f"{self.customer}: Stripe customer {self.old_stripe_id or '(none)'} -> "
            f"{self.new_stripe_id}; {freed} unfinished invoice(s) go to it on the next run"
        )


def relink_customer(
    engine: Engine,
    gw: Gateway,
    *,
    customer_id: int,
    actor: str,
    now: datetime,
    stripe_id: str | None = None,
    recreate: bool = False,
) -> RelinkResult:
    """Point local customer `customer_id` at a live Stripe customer; audited, idempotent.

    Exactly one of `recreate` (a new Stripe customer, only while the linked one is deleted or
    missing) and `stripe_id` (an existing, not deleted `cus_...`, not linked to another
    customer). Raises ValidationError (nothing written) otherwise; StripeFailure when Stripe
    cannot be reached.
    """
    if recreate == (stripe_id is not None):
        raise ValidationError("Give either --recreate or --stripe-id cus_..., not both or none.")
    with session_scope(engine) as session:
        customer = _customer(session, customer_id)
        keys = keys_for(session)
        old = customer.stripe_customer_id
    if stripe_id is not None:
        target = _existing_target(engine, gw, customer, stripe_id.strip())
    else:
        target = _recreated_target(gw, keys, customer)
    if target == old:
        return RelinkResult(customer.name, old, target, changed=False)
    stuck = _stuck_invoices(engine, customer_id)
    for inv in stuck:
        if inv.stripe_invoice_id:
            _retire(gw, keys, inv)
    with session_scope(engine) as session:
        row = _customer(session, customer_id)
        row.stripe_customer_id, row.default_payment_method = target, None
        row.updated_at = now
        session.add(row)
        freed = [_free(session, inv.id or 0, now) for inv in stuck]
        audit.record(
            session,
            actor=actor,
            action="customer.stripe_relinked",
            target=f"customer:{customer_id}",
            before={"stripe_customer_id": old},
            after={
                "stripe_customer_id": target,
                "how": "recreate" if recreate else "link",
                "invoices_freed": freed,
            },
            at=now,
        )
    return RelinkResult(customer.name, old, target, changed=True, invoices_freed=freed)


def _customer(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise ValidationError(f"There is no customer {customer_id}.")
    return customer


def _is_live(remote: JSON | None) -> bool:
    return remote is not None and not remote.get("deleted")


def _existing_target(engine: Engine, gw: Gateway, customer: Customer, stripe_id: str) -> str:
    if not stripe_id.startswith("cus_"):
        raise ValidationError(f"{stripe_id!r} is not a Stripe customer id (they start cus_).")
    remote = stripe_customers.customer_or_none(gw, stripe_id)
    if remote is None:
        raise ValidationError(f"Stripe has no customer {stripe_id}: check the id.")
    if remote.get("deleted"):
        raise ValidationError(
            f"Stripe customer {stripe_id} is deleted: link a live one, or re-create the "
            "customer in Stripe (--recreate)."
        )
    with session_scope(engine) as session:
        other = session.exec(
            select(Customer).where(
                Customer.stripe_customer_id == stripe_id, col(Customer.id) != customer.id
            )
        ).first()
    if other is not None:
        raise ValidationError(
            f"Stripe customer {stripe_id} is already linked to {other.name} (customer "
            f"{other.id}); one Stripe customer bills one customer."
        )
    return stripe_id


def _recreated_target(gw: Gateway, keys: Keys, customer: Customer) -> str:
    old = customer.stripe_customer_id
    if old and _is_live(stripe_customers.customer_or_none(gw, old)):
        return old  # nothing deleted: a repeated --recreate after success lands here
    cid = customer.id or 0
    found = stripe_customers.find_customer(
        gw, local_customer_id=cid, email=customer.email, install_id=keys.namespace
    )
    if found is not None and found != old:  # made by a relink that stopped before saving
        return found
    return stripe_customers.create_customer(
        gw,
        key=keys.customer_recreate(cid, old),
        local_customer_id=cid,
        name=customer.name,
        email=customer.email,
        install_id=keys.namespace,
    )


def _stuck_invoices(engine: Engine, customer_id: int) -> list[Invoice]:
    """Not pushed yet, stopped half way, or declined: what the next run would retry."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(Invoice).where(
                Invoice.customer_id == customer_id,
                col(Invoice.status).in_([InvoiceStatus.DRAFT, InvoiceStatus.OPEN]),
            )
        ).all()
    return [inv for inv in rows if not inv.is_demo and _stuck(inv)]


def _stuck(inv: Invoice) -> bool:
    if inv.status == InvoiceStatus.DRAFT:
        return inv.outcome != InvoiceOutcome.CREDIT_CARRIED
    unpaid_charge = (
        inv.push_step == PushStep.FINALIZED and inv.collection_method == "charge_automatically"
    )
    return inv.outcome == InvoiceOutcome.PAYMENT_FAILED or unpaid_charge


def _retire(gw: Gateway, keys: Keys, inv: Invoice) -> None:
    sid = inv.stripe_invoice_id or ""
    remote = stripe_invoices.invoice_or_none(gw, sid)
    if remote is None:
        return
    stripe_invoices.unlink(
        gw, key=keys.invoice_retire(sid, "unlink"), invoice_id=sid, replaced_by=inv.id or 0
    )
    status = str(remote.get("status") or "")
    stripe_invoices.retire(gw, key=keys.invoice_retire(sid, "void"), invoice_id=sid, status=status)


def _free(session: Session, invoice_id: int, now: datetime) -> int:
    """Back to an unpushed draft with fresh keys; lines and totals stay as they were."""
    inv = session.get(Invoice, invoice_id)
    assert inv is not None
    inv.stripe_invoice_id = inv.stripe_payment_intent_id = None
    inv.number = inv.hosted_invoice_url = inv.invoice_pdf = None
    inv.status, inv.outcome, inv.push_step = InvoiceStatus.DRAFT, None, PushStep.NONE
    inv.attempt_count, inv.next_payment_attempt = 0, None
    inv.issued_at, inv.last_error = None, None
    inv.key_generation += 1
    inv.updated_at = now
    session.add(inv)
    return invoice_id
