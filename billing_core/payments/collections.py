"""Collections (dunning): reminders, the final notice and uncollectible, run from cron.

`run_collections` takes every open send-invoice invoice that is in Stripe, asks the policy
(payments/dunning.py) for the one step it needs today, and takes it through Stripe: a reminder
or the final notice is Stripe's `POST /v1/invoices/{id}/send` (Stripe emails the customer, so no
mail server is needed); uncollectible is `POST /v1/invoices/{id}/mark_uncollectible`.

Once per invoice and step, whatever runs at the same time or dies half way:
1. claim: insert the CollectionStep row (unique per invoice and step) BEFORE calling Stripe;
   a second cron host gets the unique-key error and leaves the step alone;
2. call Stripe with the step's idempotency key (stripe/keys.py), the same on every attempt;
3. mark the step done, mirror the invoice Stripe answered and write the audit entry, in one
   transaction.
A claim that never became `done` (the process died between 1 and 3, or Stripe failed) is taken
over by a later pass once it is older than CLAIM_LEASE (or at once after a recorded failure):
the takeover compares and bumps `attempts`, so only one pass wins it, and the unchanged key
makes Stripe replay a send that had in fact gone out instead of mailing twice.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.models import CollectionStep, Customer, Invoice, bill_to_name
from billing_core.payments.dunning import (
    CollectionsPolicy,
    PlannedStep,
    describe_step,
    next_step,
)
from billing_core.states import InvoiceStatus
from billing_core.stripe import invoices as stripe_invoices
from billing_core.stripe.errors import StripeFailure
from billing_core.stripe.gateway import Gateway
from billing_core.stripe.keys import keys_for
from billing_core.stripe.mapping import StripeInvoice, mirror_invoice

log = logging.getLogger("billing_core.collections")

# A claim younger than this belongs to a pass that may still be calling Stripe (its retries
# take at most a minute or two); an older one was left by a pass that died, and is taken over.
CLAIM_LEASE = timedelta(minutes=15)
PROGRESS_EVERY = 100  # a log line every this many steps

Outcome = Literal["sent", "marked", "not_needed", "busy", "failed"]

AUDIT_ACTION = {
    "reminder": "invoice.reminder_sent",
    "final_notice": "invoice.final_notice_sent",
    "uncollectible": "invoice.marked_uncollectible",
}


@dataclass(frozen=True)
class PlannedAction:
    """One step a pass will take (or, in a dry run, would take)."""

    invoice_id: int
    number: str
    customer: str
    currency: str
    amount_due_minor: int
    due_at: datetime
    stripe_invoice_id: str
    key_generation: int
    plan: PlannedStep
    seen_attempts: int | None  # None: no claim yet; else the claim to take over

    def describe(self) -> str:
        return (
            f"invoice {self.number} ({self.customer}, {self.plan.days_past_due:+d} days from due "
            f"date {self.due_at:%Y-%m-%d}): {describe_step(self.plan.step).lower()}"
        )


@dataclass(frozen=True)
class StepOutcome:
    action: PlannedAction
    outcome: Outcome
    message: str = ""


@dataclass
class CollectionsResult:
    """What a pass found and did; `exit_code` 1 when a step failed (the next pass retries)."""

    dry_run: bool
    candidates: int = 0
    # Open send-invoice invoices left alone because Stripe has no invoice for them (demo
    # records, or not pushed yet): said, so a list of "0 due" is not read as "none open".
    not_in_stripe: int = 0
    planned: list[PlannedAction] = field(default_factory=list)
    outcomes: list[StepOutcome] = field(default_factory=list)
    stripe_calls: int = 0
    seconds: float = 0.0

    def count(self, outcome: Outcome) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)

    @property
    def failed(self) -> list[StepOutcome]:
        return [o for o in self.outcomes if o.outcome == "failed"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def describe(self) -> str:
        outside = (
            f" ({self.not_in_stripe} more open, not in Stripe: demo records or not pushed yet)"
            if self.not_in_stripe
            else ""
        )
        if self.dry_run:
            return (
                f"collections (dry run): {self.candidates} open invoices sent for payment"
                f"{outside}, {len(self.planned)} steps due; nothing was sent or changed"
            )
        reminders = sum(
            1 for o in self.outcomes if o.outcome == "sent" and o.action.plan.kind == "reminder"
        )
        finals = sum(
            1 for o in self.outcomes if o.outcome == "sent" and o.action.plan.kind == "final_notice"
        )
        return (
            f"collections: {self.candidates} open invoices sent for payment{outside}; "
            f"{reminders} reminders and {finals} final notices sent, "
            f"{self.count('marked')} marked uncollectible, "
            f"{self.count('not_needed')} no longer open in Stripe, "
            f"{self.count('busy')} taken by another pass, {self.count('failed')} failed; "
            f"{self.stripe_calls} Stripe requests in {self.seconds:.1f} s"
        )


def pass_owner() -> str:
    """Who holds a claim: host and process, shown when a claim is left behind."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _open_not_in_stripe(session: Session) -> int:
    """Open send-invoice invoices that collections leaves alone: no Stripe invoice to chase."""
    count = session.execute(
        sa_select(func.count())
        .select_from(Invoice)
        .where(
            col(Invoice.collection_method) == "send_invoice",
            col(Invoice.status) == InvoiceStatus.OPEN,
            or_(col(Invoice.stripe_invoice_id).is_(None), col(Invoice.is_demo).is_(True)),
        )
    ).scalar_one()
    return int(count)


def plan_collections(
    session: Session, policy: CollectionsPolicy, *, now: datetime, lease: timedelta = CLAIM_LEASE
) -> tuple[int, list[PlannedAction]]:
    """(open send-invoice invoices in Stripe, the steps due now); reads only.

    Plain columns rather than ORM objects: a pass plans over every open invoice each day.
    """
    chased = (
        col(Invoice.collection_method) == "send_invoice",
        col(Invoice.status) == InvoiceStatus.OPEN,
        col(Invoice.stripe_invoice_id).is_not(None),
        col(Invoice.due_at).is_not(None),
        col(Invoice.is_demo).is_(False),
    )
    rows = session.execute(
        sa_select(
            col(Invoice.id),
            col(Invoice.number),
            bill_to_name(),
            col(Invoice.currency),
            col(Invoice.total_minor) - col(Invoice.amount_paid_minor),
            col(Invoice.due_at),
            col(Invoice.stripe_invoice_id),
            col(Invoice.key_generation),
        )
        .join(Customer, col(Customer.id) == col(Invoice.customer_id))
        .where(*chased)
        .order_by(col(Invoice.due_at), col(Invoice.id))
    ).all()
    steps: dict[int, dict[str, tuple[str, datetime, int, datetime | None]]] = {}
    for invoice_id, step, status, claimed_at, attempts, done_at in session.execute(
        sa_select(
            col(CollectionStep.invoice_id),
            col(CollectionStep.step),
            col(CollectionStep.status),
            col(CollectionStep.claimed_at),
            col(CollectionStep.attempts),
            col(CollectionStep.done_at),
        )
        .join(Invoice, col(Invoice.id) == col(CollectionStep.invoice_id))
        .where(*chased)
    ).all():
        steps.setdefault(invoice_id, {})[step] = (status, claimed_at, attempts, done_at)
    planned: list[PlannedAction] = []
    for invoice_id, number, customer, currency, due_minor, due_at, stripe_id, generation in rows:
        taken = steps.get(invoice_id, {})
        done = {name: row[3] for name, row in taken.items() if row[3] is not None}
        plan = next_step(policy, due_at=due_at, now=now, done=done)
        if plan is None:
            continue
        claim = taken.get(plan.step)
        if claim is not None and claim[0] == "claimed" and now - claim[1] < lease:
            continue  # another pass is on it right now
        planned.append(
            PlannedAction(
                invoice_id=invoice_id,
                number=number or f"#{invoice_id}",
                customer=str(customer),
                currency=currency,
                amount_due_minor=int(due_minor),
                due_at=due_at,
                stripe_invoice_id=str(stripe_id),
                key_generation=generation,
                plan=plan,
                seen_attempts=None if claim is None else claim[2],
            )
        )
    return len(rows), planned


def claim(
    engine: Engine, action: PlannedAction, *, key: str, owner: str, actor: str, now: datetime
) -> bool:
    """Take the step for this pass (its own transaction); False when another pass has it."""
    with Session(engine) as session:
        if action.seen_attempts is None:
            session.add(
                CollectionStep(
                    invoice_id=action.invoice_id,
                    step=action.plan.step,
                    day=action.plan.day,
                    days_past_due=action.plan.days_past_due,
                    idempotency_key=key,
                    claimed_by=owner,
                    claimed_at=now,
                    actor=actor,
                )
            )
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return False  # the unique key: another pass claimed it first
            return True
        # Take over a claim left behind: compare-and-set on the attempts it had when planned.
        took = session.execute(
            update(CollectionStep)
            .where(
                col(CollectionStep.invoice_id) == action.invoice_id,
                col(CollectionStep.step) == action.plan.step,
                col(CollectionStep.attempts) == action.seen_attempts,
                col(CollectionStep.status) != "done",
            )
            .values(
                status="claimed",
                claimed_by=owner,
                claimed_at=now,
                attempts=action.seen_attempts + 1,
                days_past_due=action.plan.days_past_due,
                actor=actor,
            )
        )
        session.commit()
        return bool(getattr(took, "rowcount", 0) == 1)


def _call_stripe(gateway: Gateway, action: PlannedAction, key: str) -> StripeInvoice:
    if action.plan.kind == "uncollectible":
        return stripe_invoices.mark_uncollectible(
            gateway, key=key, invoice_id=action.stripe_invoice_id
        )
    return stripe_invoices.send(gateway, key=key, invoice_id=action.stripe_invoice_id)


def _step_row(session: Session, action: PlannedAction) -> CollectionStep:
    row = session.exec(
        select(CollectionStep).where(
            CollectionStep.invoice_id == action.invoice_id,
            CollectionStep.step == action.plan.step,
        )
    ).one()
    return row


def _finish(
    engine: Engine,
    action: PlannedAction,
    remote: StripeInvoice,
    *,
    key: str,
    actor: str,
    now: datetime,
) -> Outcome:
    """Record what Stripe answered: the step done and audited, the invoice mirrored."""
    with Session(engine) as session:
        row = _step_row(session, action)
        invoice = session.get(Invoice, action.invoice_id)
        assert invoice is not None
        before = {"status": invoice.display_status}
        mirror_invoice(invoice, remote, now)
        session.add(invoice)
        marking = action.plan.kind == "uncollectible"
        wanted = InvoiceStatus.UNCOLLECTIBLE if marking else InvoiceStatus.OPEN
        if remote.status != wanted:
            # Paid or voided in Stripe since the last sync: Stripe sent nothing, nothing to audit.
            row.status, row.error = "failed", f"Stripe has the invoice as {remote.status}."
            session.add(row)
            session.commit()
            return "not_needed"
        row.status, row.done_at, row.error = "done", now, None
        session.add(row)
        audit.record(
            session,
            actor=actor,
            action=AUDIT_ACTION[action.plan.kind],
            target=f"invoice:{action.invoice_id}",
            before=before,
            after={
                "status": invoice.display_status,
                "step": action.plan.step,
                "days_past_due": action.plan.days_past_due,
                "due_at": action.due_at,
                "stripe_invoice": action.stripe_invoice_id,
                "idempotency_key": key,
            },
            at=now,
        )
        session.commit()
    return "marked" if action.plan.kind == "uncollectible" else "sent"


def _failed(
    engine: Engine, gateway: Gateway, action: PlannedAction, exc: StripeFailure, now: datetime
) -> StepOutcome:
    """Keep Stripe's refusal on the claim (a later pass retries it) and mirror the invoice when
    Stripe refused because it changed (paid or voided meanwhile): then it is no longer chased,
    and the step was not needed rather than failed."""
    message = str(exc.reworded(f"collecting invoice {action.number}"))
    remote: StripeInvoice | None = None
    if not exc.transient:
        try:
            remote = stripe_invoices.read_invoice(gateway, action.stripe_invoice_id)
        except StripeFailure:
            remote = None
    with Session(engine) as session:
        row = _step_row(session, action)
        row.status, row.error = "failed", message
        session.add(row)
        invoice = session.get(Invoice, action.invoice_id)
        if remote is not None and invoice is not None:
            mirror_invoice(invoice, remote, now)
            session.add(invoice)
        session.commit()
    if remote is not None and remote.status != InvoiceStatus.OPEN:
        return StepOutcome(action, "not_needed", f"Stripe has the invoice as {remote.status}.")
    log.warning("%s: failed: %s", action.describe(), message)
    return StepOutcome(action, "failed", message)


def take_step(
    engine: Engine,
    gateway: Gateway,
    action: PlannedAction,
    *,
    key: str,
    owner: str,
    actor: str,
    now: datetime,
) -> StepOutcome:
    """Claim, call Stripe, record: one step of one invoice."""
    if not claim(engine, action, key=key, owner=owner, actor=actor, now=now):
        log.debug("%s: taken by another pass", action.describe())
        return StepOutcome(action, "busy")
    try:
        remote = _call_stripe(gateway, action, key)
    except StripeFailure as exc:
        return _failed(engine, gateway, action, exc, now)
    outcome = _finish(engine, action, remote, key=key, actor=actor, now=now)
    log.debug("%s: %s", action.describe(), outcome)
    return StepOutcome(action, outcome)


def run_collections(
    engine: Engine,
    gateway: Gateway | None,
    policy: CollectionsPolicy,
    *,
    now: datetime,
    actor: str,
    dry_run: bool = False,
    workers: int = 4,
    owner: str | None = None,
    lease: timedelta = CLAIM_LEASE,
    only: Callable[[PlannedAction], bool] | None = None,
) -> CollectionsResult:
    """One collections pass as of `now`. A dry run plans and changes nothing (no Stripe call).

    `gateway` may be None only for a dry run; `workers` Stripe calls run at once under the
    gateway's rate limit; `only` narrows the steps taken (tests, a single invoice).
    """
    started = time.perf_counter()
    calls_before = gateway.calls if gateway is not None else 0
    with Session(engine) as session:
        candidates, planned = plan_collections(session, policy, now=now, lease=lease)
        if only is not None:
            planned = [a for a in planned if only(a)]
        keys = None if dry_run else keys_for(session)
        session.commit()  # the install id, made once per database
        not_in_stripe = _open_not_in_stripe(session)
    result = CollectionsResult(
        dry_run=dry_run, candidates=candidates, planned=planned, not_in_stripe=not_in_stripe
    )
    log.info(
        "collections as of %s: %d open invoices sent for payment, %d steps due (%s)",
        f"{now:%Y-%m-%d %H:%M} UTC",
        candidates,
        len(planned),
        policy.describe(),
    )
    if dry_run or not planned:
        result.seconds = time.perf_counter() - started
        return result
    assert gateway is not None and keys is not None
    me = owner or pass_owner()

    def one(action: PlannedAction) -> StepOutcome:
        key = keys.collection_step(action.invoice_id, action.plan.step, action.key_generation)
        return take_step(engine, gateway, action, key=key, owner=me, actor=actor, now=now)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for n, outcome in enumerate(pool.map(one, planned), start=1):
            result.outcomes.append(outcome)
            if n % PROGRESS_EVERY == 0 or n == len(planned):
                log.info("collections: %d of %d steps taken", n, len(planned))
    result.stripe_calls = gateway.calls - calls_before
    result.seconds = time.perf_counter() - started
    return result


def planned_lines(actions: Iterable[PlannedAction]) -> list[str]:
    """One line per planned step, for `collections --dry-run`."""
    return [f"would take: {a.describe()}" for a in actions]
