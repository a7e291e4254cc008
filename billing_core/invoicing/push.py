"""The push of one draft to Stripe: create, add lines, finalize, then pay or send.

At most four calls per invoice, each with an idempotency key made of this database's install id,
the local invoice id and the step; each step's result is saved before the next call, so a killed
run resumes where it stopped.

Recovery rules. `push_step` is saved as "creating" before the create call: an invoice found in
that state has no Stripe id but may exist in Stripe, so it is looked up by metadata before a
new create (that keeps a retry safe after Stripe forgot the idempotency key, 24 h later). An
invoice resumed from an earlier attempt in any later step is re-read from Stripe once and its
step taken from Stripe's state, so lines are never added twice. A declined payment bumps
`pay_attempt`, so the next run's pay call gets a new key (Stripe would replay the decline).

Totals that are negative (credits larger than charges) are never sent to Stripe: the invoice
is kept as a draft with outcome "credit_carried" (shown as "credit") and the amount is carried
to the next period as a TrueUp, which the next run bills as a credit line."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from billing_core.db import session_scope
from billing_core.errors import (
    BillingError,
    PaymentProviderError,
    ValidationError,
)
from billing_core.invoicing.drafts import CustomerProblem
from billing_core.invoicing.line_text import month_label
from billing_core.models import (
    Customer,
    Invoice,
    InvoiceLine,
)
from billing_core.money import stripe_amount_problem
from billing_core.periods import Period, utcnow
from billing_core.states import CARRIED_OUTCOMES, InvoiceOutcome, InvoiceStatus, PushStep
from billing_core.stripe import customers as stripe_customers
from billing_core.stripe import invoices as stripe_invoices
from billing_core.stripe import payments as stripe_payments
from billing_core.stripe.errors import StripeFailure
from billing_core.stripe.gateway import Gateway
from billing_core.stripe.keys import Keys
from billing_core.stripe.mapping import StripeInvoice, invoice_metadata, mirror_invoice

log = logging.getLogger(__name__)

TEST_CARD = "pm_card_visa"


# Invoices in these states need nothing more from a run.
DONE_STEPS = frozenset({PushStep.PAID, PushStep.SENT})


FINAL_STATUSES = frozenset({InvoiceStatus.PAID, InvoiceStatus.VOID, InvoiceStatus.UNCOLLECTIBLE})


# A credit, or an amount below Stripe's minimum charge, carried forward is never sent to Stripe.
FINAL_OUTCOMES = CARRIED_OUTCOMES


Progress = Callable[[str], None]


# Called after each Stripe call returned and before its result is saved (tests crash here).
StepHook = Callable[[int, str], None]


@dataclass
class PushOutcome:
    invoice_id: int
    customer_id: int
    customer: str
    ok: bool
    status: str
    total_minor: int
    currency: str
    calls: int = 0
    problem: CustomerProblem | None = None


@dataclass
class _Snapshot:
    """What one push needs, read in a short transaction (no DB lock held over HTTP)."""

    invoice: Invoice
    customer: Customer
    lines: list[InvoiceLine]


class Pusher:
    """Pushes one invoice at a time through its steps; safe to use from many threads."""

    def __init__(
        self,
        engine: Engine,
        gateway: Gateway,
        *,
        namespace: str,
        attach_test_cards: bool = False,
        hook: StepHook | None = None,
    ) -> None:
        self.engine = engine
        self.gw = gateway
        self.ns = namespace
        self.keys = Keys(namespace)
        self.attach_test_cards = attach_test_cards
        self.hook = hook
        self.abort_reason: str | None = None
        self._customer_locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- persistence ---------------------------------------------------------------------

    def _load(self, invoice_id: int) -> _Snapshot:
        with session_scope(self.engine) as s:
            inv = s.get(Invoice, invoice_id)
            if inv is None:
                raise ValidationError(f"Invoice {invoice_id} does not exist.")
            cus = s.get(Customer, inv.customer_id)
            assert cus is not None
            lines = list(
                s.exec(
                    select(InvoiceLine)
                    .where(InvoiceLine.invoice_id == invoice_id)
                    .order_by(col(InvoiceLine.position))
                ).all()
            )
            return _Snapshot(inv, cus, lines)

    def _save(self, invoice_id: int, **values: Any) -> Invoice:
        return _update_row(self.engine, Invoice, invoice_id, values)

    def _mark(self, invoice_id: int, step: str) -> None:
        if self.hook is not None:
            self.hook(invoice_id, step)

    def _sync_from_stripe(self, invoice_id: int, obj: StripeInvoice) -> Invoice:
        """Save Stripe's state of the invoice (mapping.mirror_invoice) in its own transaction."""
        with session_scope(self.engine) as s:
            row = s.get(Invoice, invoice_id)
            assert row is not None
            mirror_invoice(row, obj, utcnow())
            if obj.status == InvoiceStatus.PAID:
                row.push_step = PushStep.PAID
            s.add(row)
        return row

    # -- customer ------------------------------------------------------------------------

    def _customer_lock(self, customer_id: int) -> threading.Lock:
        with self._locks_guard:
            return self._customer_locks.setdefault(customer_id, threading.Lock())

    def ensure_customer(self, customer: Customer) -> str:
        """The customer's Stripe id, creating the Stripe customer once (idempotently)."""
        if customer.stripe_customer_id:
            return customer.stripe_customer_id
        cid = customer.id or 0
        with self._customer_lock(cid):
            with session_scope(self.engine) as s:
                fresh = s.get(Customer, cid)
                if fresh is not None and fresh.stripe_customer_id:
                    return fresh.stripe_customer_id
            stripe_id = stripe_customers.find_customer(
                self.gw, local_customer_id=cid, email=customer.email, install_id=self.ns
            )
            if stripe_id is None:
                stripe_id = stripe_customers.create_customer(
                    self.gw,
                    key=self.keys.customer_create(cid),
                    local_customer_id=cid,
                    name=customer.name,
                    email=customer.email,
                    install_id=self.ns,
                )
            values: dict[str, Any] = {"stripe_customer_id": stripe_id}
            if self.attach_test_cards and customer.collection_method == "charge_automatically":
                stripe_payments.attach_test_card(
                    self.gw,
                    customer=stripe_id,
                    card=TEST_CARD,
                    keys=(self.keys.test_card(cid, "attach"), self.keys.test_card(cid, "default")),
                )
                values["default_payment_method"] = "card visa 4242 (test)"
            _update_row(self.engine, Customer, cid, values)
            return stripe_id

    # -- the step machine ----------------------------------------------------------------

    def push(self, invoice_id: int) -> PushOutcome:
        snap = self._load(invoice_id)
        inv, cus = snap.invoice, snap.customer
        outcome = PushOutcome(
            invoice_id,
            cus.id or 0,
            cus.name,
            False,
            inv.display_status,
            inv.total_minor,
            inv.currency,
        )
        calls_before = self.gw.calls
        step = "customer"
        try:
            if self.abort_reason:
                raise PaymentProviderError(f"not attempted: {self.abort_reason}")
            if inv.push_step in (PushStep.NONE, PushStep.CREATING):
                _check_amounts(snap)
            stripe_customer = self.ensure_customer(cus)
            step = "create"
            inv, current = self._created(snap, stripe_customer)
            while (
                current not in DONE_STEPS
                and inv.status not in FINAL_STATUSES
                and inv.outcome not in FINAL_OUTCOMES
            ):
                step = _action(current, inv.collection_method)
                inv, current = self._advance(inv, snap, current)
            outcome.ok = True
            outcome.status = inv.display_status
        except StripeFailure as exc:
            outcome.problem = self._fail(snap, step, exc)
            outcome.status = self._load(invoice_id).invoice.display_status
        except BillingError as exc:
            outcome.problem = CustomerProblem(
                cus.id or 0, cus.name, step, str(exc), invoice_id=invoice_id
            )
            self._save(invoice_id, last_error=str(exc))
        outcome.calls = self.gw.calls - calls_before
        return outcome

    def _created(self, snap: _Snapshot, stripe_customer: str) -> tuple[Invoice, str]:
        """Make sure the Stripe invoice exists; returns the invoice and the step reached."""
        inv = snap.invoice
        iid = inv.id or 0
        if inv.stripe_invoice_id is None:
            found = None
            if inv.push_step == PushStep.CREATING:  # an earlier create may have reached Stripe
                found = stripe_invoices.find_invoice(
                    self.gw, customer=stripe_customer, local_invoice_id=iid, install_id=self.ns
                )
            if found is None:
                inv = self._save(iid, push_step=PushStep.CREATING)
                obj = stripe_invoices.create_invoice(
                    self.gw,
                    key=self.keys.invoice_step(iid, "create", inv.key_generation),
                    customer=stripe_customer,
                    currency=inv.currency,
                    collection_method=inv.collection_method,
                    days_until_due=snap.customer.days_until_due,
                    metadata=invoice_metadata(
                        invoice_id=iid,
                        customer_id=inv.customer_id,
                        period=inv.period,
                        install_id=self.ns,
                    ),
                    description=f"Services for {month_label(inv.period)}",
                )
                self._mark(iid, "create")
                inv = self._save(iid, stripe_invoice_id=obj.id, push_step=PushStep.CREATED)
                return inv, PushStep.CREATED
            return self._resume_from(snap, found)
        if (
            inv.push_step in (PushStep.CREATED, PushStep.LINES_ADDED, PushStep.FINALIZED)
            or inv.outcome == InvoiceOutcome.PAYMENT_FAILED
        ):
            # Resumed from an earlier attempt: Stripe's state decides the next step.
            obj = stripe_invoices.read_invoice(self.gw, inv.stripe_invoice_id)
            return self._resume_from(snap, obj)
        return inv, inv.push_step

    def _resume_from(self, snap: _Snapshot, obj: StripeInvoice) -> tuple[Invoice, str]:
        iid = snap.invoice.id or 0
        expected = sum(line.amount_minor for line in snap.lines)
        if obj.status == InvoiceStatus.DRAFT:
            has_lines = bool(obj.lines)
            if has_lines and obj.total != expected:
                raise PaymentProviderError(
                    f"Stripe invoice {obj.id} is a draft with total {obj.total} but the local "
                    f"invoice totals {expected}: check it in the Stripe dashboard before retrying."
                )
            step = PushStep.LINES_ADDED if has_lines else PushStep.CREATED
            return self._save(iid, stripe_invoice_id=obj.id, push_step=step), step
        inv = self._sync_from_stripe(iid, obj)
        if obj.status == InvoiceStatus.OPEN:
            step = PushStep.FINALIZED
            if inv.push_step not in (PushStep.FINALIZED,):
                inv = self._save(iid, push_step=step)
            return inv, step
        return inv, inv.push_step

    def _advance(self, inv: Invoice, snap: _Snapshot, step: str) -> tuple[Invoice, str]:
        iid = inv.id or 0
        sid = inv.stripe_invoice_id or ""
        if step == PushStep.CREATED:
            lines = [_stripe_line(line, inv) for line in snap.lines]
            obj = stripe_invoices.add_lines(
                self.gw,
                key=self.keys.invoice_step(iid, "lines", inv.key_generation),
                invoice_id=sid,
                lines=lines,
            )
            self._mark(iid, "lines")
            if obj.total != inv.total_minor:
                raise PaymentProviderError(
                    f"Stripe totals invoice {sid} at {obj.total} but the draft totals "
                    f"{inv.total_minor} ({inv.currency} minor units); not finalized."
                )
            return self._save(iid, push_step=PushStep.LINES_ADDED), PushStep.LINES_ADDED
        if step == PushStep.LINES_ADDED:
            obj = stripe_invoices.finalize(
                self.gw,
                key=self.keys.invoice_step(iid, "finalize", inv.key_generation),
                invoice_id=sid,
            )
            self._mark(iid, "finalize")
            inv = self._sync_from_stripe(iid, obj)
            if obj.status == InvoiceStatus.PAID:  # Stripe settles a zero-amount invoice at once
                return inv, PushStep.PAID
            return self._save(iid, push_step=PushStep.FINALIZED), PushStep.FINALIZED
        if step == PushStep.FINALIZED:
            if inv.collection_method == "send_invoice":
                obj = stripe_invoices.send(
                    self.gw,
                    key=self.keys.invoice_step(iid, "send", inv.key_generation),
                    invoice_id=sid,
                )
                self._mark(iid, "send")
                self._sync_from_stripe(iid, obj)
                return self._save(iid, push_step=PushStep.SENT, last_error=None), PushStep.SENT
            obj = stripe_invoices.pay(
                self.gw,
                key=self.keys.invoice_pay(iid, inv.pay_attempt, inv.key_generation),
                invoice_id=sid,
            )
            self._mark(iid, "pay")
            return self._sync_from_stripe(iid, obj), PushStep.PAID
        raise ValidationError(f"Invoice {iid} is in an unknown push step {step!r}.")

    def _fail(self, snap: _Snapshot, step: str, exc: StripeFailure) -> CustomerProblem:
        inv, cus = snap.invoice, snap.customer
        iid = inv.id or 0
        # Only a refusal is a failed payment; a network error may have charged (the next run
        # re-reads the invoice from Stripe before paying again, with the same key).
        if step == "pay" and exc.payment_refused:
            if exc.code == "invoice_no_payment_method":
                message = (
                    f"{cus.name} has no default payment method in Stripe: the invoice is open "
                    "and was not charged. Ask the customer to add a card, then run again."
                )
            else:
                message = str(exc.reworded(f"charging invoice {inv.stripe_invoice_id}"))
            # The next attempt needs a new key: Stripe would replay this decline for the old one.
            with session_scope(self.engine) as s:
                fresh = s.get(Invoice, iid)
                assert fresh is not None
                fresh.outcome = InvoiceOutcome.PAYMENT_FAILED
                fresh.pay_attempt += 1
                fresh.attempt_count += 1
                fresh.last_error = message
                fresh.updated_at = utcnow()
                s.add(fresh)
            return CustomerProblem(cus.id or 0, cus.name, "pay", message, invoice_id=iid)
        if exc.kind == "auth":
            self.abort_reason = "Stripe rejected the API key; check STRIPE_API_KEY"
        message = str(exc.reworded(f"the {step} step of invoice {iid}"))
        self._save(iid, last_error=message)
        return CustomerProblem(cus.id or 0, cus.name, step, message, invoice_id=iid)


# Seconds between the push's progress lines in the log (and one at the end).
PROGRESS_SECONDS = 5.0


class PushMeter:
    """The push's progress in the log: invoices done of all, failures, and the Stripe request
    rate against the limit, every PROGRESS_SECONDS (a 5,000-invoice run takes minutes)."""

    def __init__(self, say: Progress, gateway: Gateway, total: int) -> None:
        self.say, self.gateway, self.total = say, gateway, total
        self.done = self.failed = 0
        self.started = self.last = time.monotonic()
        self.calls_at_start = gateway.calls

    def tick(self, *, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        if time.monotonic() - self.last >= PROGRESS_SECONDS:
            self.report()

    def report(self) -> None:
        self.last = time.monotonic()
        seconds = max(self.last - self.started, 1e-9)
        rate = (self.gateway.calls - self.calls_at_start) / seconds
        self.say(
            f"  pushed {self.done} of {self.total} invoices ({self.failed} failed) in "
            f"{seconds:.0f} s: {rate:.1f} Stripe requests/s of {self.gateway.bucket.rate:g} "
            f"allowed, {self.gateway.rate_limited} rate-limited"
        )


_Row = TypeVar("_Row", Invoice, Customer)


def _update_row(engine: Engine, model: type[_Row], row_id: int, values: dict[str, Any]) -> _Row:
    """Save one step's result in its own transaction, so a crash after it never repeats it."""
    with session_scope(engine) as s:
        row = s.get(model, row_id)
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        s.add(row)
    return row


def _action(step: str, collection_method: str) -> str:
    """The Stripe call that moves an invoice on from `step` (named in errors)."""
    if step == PushStep.CREATED:
        return "lines"
    if step == PushStep.LINES_ADDED:
        return "finalize"
    return "pay" if collection_method == "charge_automatically" else "send"


def _check_amounts(snap: _Snapshot) -> None:
    """Refuse, before any Stripe call, lines in a form Stripe does not take (a draft saved
    before the currency's rule was applied, or edited by hand): money.stripe_amount_problem."""
    cur = snap.invoice.currency
    for pos, line in enumerate(snap.lines, start=1):
        problem = stripe_amount_problem(line.amount_minor, cur)
        if problem is not None:
            raise ValidationError(
                f"Line {pos} of invoice {snap.invoice.id} ({line.description}) cannot be sent to "
                f"Stripe: {problem} Nothing was sent; rebuild the draft for this customer."
            )


def _stripe_line(line: InvoiceLine, inv: Invoice) -> dict[str, Any]:
    period = Period.parse(inv.period)
    return {
        "amount": line.amount_minor,
        "description": line.description,
        "period": {
            "start": int(period.start_at.timestamp()),
            "end": int(period.end_at.timestamp()) - 1,
        },
        "metadata": {"kind": line.kind, "local_line_id": str(line.id)},
    }
