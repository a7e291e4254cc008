"""Invoice runs: drafts for a period, then a resumable, idempotent push of each to Stripe.

A run for period P (DESIGN.md section 6):
1. refuses a period that is not closed yet, then takes the run lock for P;
2. prices every active customer that has no invoice for P yet and saves all drafts in one
   transaction (the unique key customer+period refuses a second invoice);
3. pushes every unfinished invoice of P with bounded concurrency under one rate limiter:
   create (auto_advance off, local ids in metadata), add all lines in one call, finalize, then pay
   (charge_automatically) or send (send_invoice). Each call carries an idempotency key made of
   this database's install id, the local invoice id and the step; each step's result is saved
   before the next call, so a killed run resumes where it stopped.

Recovery rules. `push_step` is saved as "creating" before the create call: an invoice found in
that state has no Stripe id but may exist in Stripe, so it is looked up by metadata before a
new create (that keeps a retry safe after Stripe forgot the idempotency key, 24 h later). An
invoice resumed from an earlier attempt in any later step is re-read from Stripe once and its
step taken from Stripe's state, so lines are never added twice. A declined payment bumps
`pay_attempt`, so the next run's pay call gets a new key (Stripe would replay the decline).

Totals that are negative (credits larger than charges) are never sent to Stripe: the invoice
is kept with status "credit" and the amount is carried to the next period as a TrueUp, which
the next run bills as a credit line.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import stripe
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col, select

from billing_core import audit
from billing_core import stripe_gateway as gw
from billing_core.config import Settings
from billing_core.costs import attributed_costs
from billing_core.db import session_scope
from billing_core.errors import (
    BillingError,
    ConfigError,
    ExchangeRateMissing,
    PaymentProviderError,
    ValidationError,
)
from billing_core.models import (
    Customer,
    ExchangeRate,
    Invoice,
    InvoiceLine,
    InvoiceRun,
    Plan,
    PlanMetric,
    SyncState,
    TrueUp,
)
from billing_core.money import display, normalize_currency, to_decimal
from billing_core.periods import Period, utcnow
from billing_core.plans import effective_plan_id
from billing_core.pricing import (
    Draft,
    MetricTerms,
    PlanTerms,
    PricingInput,
    Rates,
    TrueUpItem,
    price,
)
from billing_core.rate_limit import TokenBucket
from billing_core.run_lock import DatabaseLock, default_owner, lock_name
from billing_core.usage import totals_by_metric

log = logging.getLogger(__name__)

# Invoices in these states need nothing more from a run.
DONE_STEPS = frozenset({"paid", "sent"})
FINAL_STATUSES = frozenset({"paid", "void", "uncollectible", "credit"})
# Rate limits when STRIPE_REQUESTS_PER_SECOND is not set: Stripe allows ~25/s in test mode and
# ~100/s live; stay under both so other tools sharing the account keep some headroom.
DEFAULT_RPS_TEST = 20.0
DEFAULT_RPS_LIVE = 80.0
TEST_CARD = "pm_card_visa"

Progress = Callable[[str], None]
# Called after each Stripe call returned and before its result is saved (tests crash here).
StepHook = Callable[[int, str], None]


class CostsMissing(ConfigError):
    """No AWS cost snapshot exists for the period, so a run would under-bill every customer."""


# ------------------------------------------------------------------------------- inputs


def install_id(session: Session) -> str:
    """A random id of this database, made once; it prefixes every idempotency key.

    Without it, two databases (a re-seeded demo, staging next to production) sharing one Stripe
    account would send the same key for their own invoice 1 and get each other's results.
    """
    row = session.get(SyncState, "install_id")
    if row is None:
        row = SyncState(name="install_id", value=secrets.token_hex(4))
        session.add(row)
        session.flush()
    return row.value


def load_rates(session: Session, period: Period) -> Rates:
    rows = session.exec(
        select(ExchangeRate).where(ExchangeRate.period == str(period), ExchangeRate.base == "USD")
    ).all()
    return Rates(
        period=str(period),
        usd_to={r.quote: r.rate for r in rows},
        sources={r.quote: r.source for r in rows},
    )


def _plan_terms(plan: Plan, metrics: Sequence[PlanMetric]) -> PlanTerms:
    return PlanTerms(
        name=plan.name,
        currency=plan.currency,
        base_fee_minor=plan.base_fee_minor,
        markup_pct=plan.markup_pct,
        metrics=tuple(
            MetricTerms(m.metric, m.included_quantity, m.overage_unit_price, m.unit)
            for m in metrics
        ),
    )


# ------------------------------------------------------------------------------- drafts


@dataclass(frozen=True)
class CustomerProblem:
    """Why one customer was not invoiced (or not pushed); the others carried on."""

    customer_id: int
    customer: str
    step: str
    message: str
    invoice_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "customer": self.customer,
            "invoice_id": self.invoice_id,
            "step": self.step,
            "message": self.message,
        }


@dataclass
class DraftSet:
    """The drafts of a period, the customers refused, and those already invoiced."""

    period: str
    drafts: list[Draft] = field(default_factory=list)
    problems: list[CustomerProblem] = field(default_factory=list)
    already_invoiced: list[str] = field(default_factory=list)
    costs_estimated: bool = False
    costs_found: bool = True

    def totals_by_currency(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.drafts:
            out[d.currency] = out.get(d.currency, 0) + d.total_minor
        return out


def build_drafts(session: Session, period: Period, *, customer_id: int | None = None) -> DraftSet:
    """Price every active customer without an invoice for the period; writes nothing."""
    attributed = attributed_costs(session, period)
    # Credits, refunds and tax are billed as their own negative or positive lines.
    costs = {
        cid: {**attributed.usage.get(cid, {}), **attributed.adjustments.get(cid, {})}
        for cid in attributed.usage.keys() | attributed.adjustments.keys()
    }
    estimated, found = attributed.estimated, attributed.snapshot_id is not None
    result = DraftSet(period=str(period), costs_estimated=estimated, costs_found=found)
    rates = load_rates(session, period)
    plans = {p.id: p for p in session.exec(select(Plan)).all() if p.id is not None}
    metrics: dict[int, list[PlanMetric]] = {}
    for m in session.exec(select(PlanMetric)).all():
        metrics.setdefault(m.plan_id, []).append(m)
    usage = totals_by_metric(session, period, customer_id)
    invoiced = set(
        session.exec(select(Invoice.customer_id).where(Invoice.period == str(period))).all()
    )
    pending: dict[int, list[TrueUp]] = {}
    for t in session.exec(select(TrueUp).where(col(TrueUp.applied_invoice_id).is_(None))).all():
        pending.setdefault(t.customer_id, []).append(t)
    query = select(Customer).where(col(Customer.active).is_(True)).order_by(col(Customer.name))
    if customer_id is not None:
        query = query.where(Customer.id == customer_id)
    customers = session.exec(query).all()
    if customer_id is not None and not customers:
        raise ValidationError(f"There is no active customer with id {customer_id}.")
    for customer in customers:
        cid = customer.id or 0
        if cid in invoiced:
            result.already_invoiced.append(customer.name)
            continue
        plan_id = effective_plan_id(customer, period)
        plan = plans.get(plan_id) if plan_id is not None else None
        if plan is None:
            result.problems.append(
                CustomerProblem(cid, customer.name, "draft", "has no plan: assign one first.")
            )
            continue
        inp = PricingInput(
            customer_id=cid,
            customer_name=customer.name,
            currency=customer.currency,
            period=str(period),
            plan=_plan_terms(plan, metrics.get(plan.id or 0, [])),
            aws_costs=costs.get(cid, {}),
            usage={m: q for (c, m), q in usage.items() if c == cid},
            true_ups=tuple(
                TrueUpItem(t.id or 0, t.description, t.amount_minor, t.currency)
                for t in sorted(pending.get(cid, []), key=lambda t: t.id or 0)
            ),
            costs_estimated=estimated,
            collection_method=customer.collection_method,
            has_payment_method=bool(customer.default_payment_method),
        )
        try:
            result.drafts.append(price(inp, rates))
        except ExchangeRateMissing as exc:
            result.problems.append(CustomerProblem(cid, customer.name, "draft", str(exc)))
    return result


def save_drafts(session: Session, drafts: DraftSet, *, run_id: int | None) -> list[int]:
    """Save every draft (invoice, lines, applied true-ups) in the caller's one transaction."""
    ids: list[int] = []
    next_period = str(Period.parse(drafts.period).next())
    for draft in drafts.drafts:
        invoice = Invoice(
            customer_id=draft.customer_id,
            period=draft.period,
            currency=draft.currency,
            status="draft",
            subtotal_minor=draft.total_minor,
            total_minor=draft.total_minor,
            fx_rate=draft.fx_rate,
            fx_source=draft.fx_source,
            costs_estimated=draft.costs_estimated,
            collection_method=draft.collection_method,
            run_id=run_id,
        )
        if draft.total_minor < 0:
            invoice.status = "credit"
            invoice.last_error = (
                f"Credits exceed charges by {display(-draft.total_minor, draft.currency)}: "
                f"nothing was charged or sent to Stripe; the credit is carried to {next_period}."
            )
        session.add(invoice)
        session.flush()
        iid = invoice.id or 0
        for pos, line in enumerate(draft.lines):
            session.add(
                InvoiceLine(
                    invoice_id=iid,
                    position=pos,
                    kind=line.kind,
                    description=line.description,
                    service=line.service,
                    metric=line.metric,
                    quantity=line.quantity,
                    unit_amount=line.unit_amount,
                    amount_minor=line.amount_minor,
                )
            )
            if line.true_up_id is not None:
                _apply_true_up(session, line.true_up_id, iid)
        if draft.total_minor < 0:
            session.add(
                TrueUp(
                    customer_id=draft.customer_id,
                    source_period=draft.period,
                    description=f"Credit carried from {draft.period}",
                    amount_minor=draft.total_minor,
                    currency=draft.currency,
                    created_by=f"invoice run {run_id}",
                )
            )
        ids.append(iid)
    session.flush()
    return ids


def _apply_true_up(session: Session, true_up_id: int, invoice_id: int) -> None:
    true_up = session.get(TrueUp, true_up_id)
    if true_up is None or true_up.applied_invoice_id is not None:
        # Another run applied it in between: refusing keeps it on exactly one invoice.
        raise ValidationError(f"True-up {true_up_id} was applied elsewhere meanwhile; run again.")
    true_up.applied_invoice_id = invoice_id
    session.add(true_up)


# ------------------------------------------------------------------------------- exchange rates


def set_rate(
    session: Session, *, period: Period, currency: str, rate: object, source: str, actor: str
) -> ExchangeRate:
    """Record (or correct) the USD->currency rate of a period; audited."""
    quote = normalize_currency(currency)
    value = to_decimal(rate)
    if quote == "USD":
        raise ValidationError("USD needs no exchange rate: give the invoice currency, e.g. EUR.")
    if value <= 0:
        raise ValidationError(f"The rate must be positive ({quote} per 1 USD), got {rate}.")
    if not source.strip():
        raise ValidationError("Say where the rate comes from (--source), e.g. 'ECB 2026-10-31'.")
    value = value.quantize(Decimal("0.0000000001"))
    row = session.exec(
        select(ExchangeRate).where(
            ExchangeRate.period == str(period),
            ExchangeRate.base == "USD",
            ExchangeRate.quote == quote,
        )
    ).first()
    before = {"rate": row.rate, "source": row.source} if row else None
    if row is None:
        row = ExchangeRate(period=str(period), base="USD", quote=quote, rate=value, source=source)
    else:
        row.rate, row.source = value, source
    session.add(row)
    audit.record(
        session,
        actor=actor,
        action="exchange_rate.set",
        target=f"USD->{quote} {period}",
        before=before,
        after={"rate": value, "source": source},
    )
    session.flush()
    return row


# ------------------------------------------------------------------------------- push


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
        caller: gw.StripeCaller,
        *,
        namespace: str,
        attach_test_cards: bool = False,
        hook: StepHook | None = None,
    ) -> None:
        self.engine = engine
        self.caller = caller
        self.ns = namespace
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

    def _sync_from_stripe(self, invoice_id: int, obj: stripe.Invoice) -> Invoice:
        values: dict[str, Any] = {
            "stripe_invoice_id": obj.id,
            "number": obj.number,
            "hosted_invoice_url": obj.hosted_invoice_url,
            "invoice_pdf": obj.invoice_pdf,
            "attempt_count": obj.attempt_count or 0,
        }
        if obj.status in ("open", "paid", "void", "uncollectible"):
            values["status"] = obj.status
            if obj.status_transitions and obj.status_transitions.finalized_at:
                values["issued_at"] = datetime.fromtimestamp(
                    obj.status_transitions.finalized_at, tz=utcnow().tzinfo
                )
        if obj.status == "paid":
            values["amount_paid_minor"] = obj.amount_paid
            values["push_step"] = "paid"
            values["last_error"] = None
            paid_at = obj.status_transitions.paid_at if obj.status_transitions else None
            values["paid_at"] = (
                datetime.fromtimestamp(paid_at, tz=utcnow().tzinfo) if paid_at else utcnow()
            )
        return self._save(invoice_id, **values)

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
            stripe_id = gw.find_customer(self.caller, local_customer_id=cid, email=customer.email)
            if stripe_id is None:
                stripe_id = gw.create_customer(
                    self.caller,
                    key=f"{self.ns}-cus-{cid}-create",
                    local_customer_id=cid,
                    name=customer.name,
                    email=customer.email,
                )
            values: dict[str, Any] = {"stripe_customer_id": stripe_id}
            if self.attach_test_cards and customer.collection_method == "charge_automatically":
                gw.attach_test_card(
                    self.caller, customer=stripe_id, card=TEST_CARD, key=f"{self.ns}-cus-{cid}"
                )
                values["default_payment_method"] = "card visa 4242 (test)"
            _update_row(self.engine, Customer, cid, values)
            return stripe_id

    # -- the step machine ----------------------------------------------------------------

    def push(self, invoice_id: int) -> PushOutcome:
        snap = self._load(invoice_id)
        inv, cus = snap.invoice, snap.customer
        outcome = PushOutcome(
            invoice_id, cus.id or 0, cus.name, False, inv.status, inv.total_minor, inv.currency
        )
        calls_before = self.caller.calls
        step = "customer"
        try:
            if self.abort_reason:
                raise PaymentProviderError(f"not attempted: {self.abort_reason}")
            stripe_customer = self.ensure_customer(cus)
            step = "create"
            inv, current = self._created(snap, stripe_customer)
            while current not in DONE_STEPS and inv.status not in FINAL_STATUSES:
                step = _action(current, inv.collection_method)
                inv, current = self._advance(inv, snap, current)
            outcome.ok = True
            outcome.status = inv.status
        except stripe.StripeError as exc:
            outcome.problem = self._fail(snap, step, exc)
            outcome.status = self._load(invoice_id).invoice.status
        except BillingError as exc:
            outcome.problem = CustomerProblem(
                cus.id or 0, cus.name, step, str(exc), invoice_id=invoice_id
            )
            self._save(invoice_id, last_error=str(exc))
        outcome.calls = self.caller.calls - calls_before
        return outcome

    def _created(self, snap: _Snapshot, stripe_customer: str) -> tuple[Invoice, str]:
        """Make sure the Stripe invoice exists; returns the invoice and the step reached."""
        inv = snap.invoice
        iid = inv.id or 0
        if inv.stripe_invoice_id is None:
            found = None
            if inv.push_step == "creating":  # an earlier create may have reached Stripe
                found = gw.find_invoice(self.caller, customer=stripe_customer, local_invoice_id=iid)
            if found is None:
                inv = self._save(iid, push_step="creating")
                obj = gw.create_invoice(
                    self.caller,
                    key=f"{self.ns}-inv-{iid}-create",
                    customer=stripe_customer,
                    currency=inv.currency,
                    collection_method=inv.collection_method,
                    days_until_due=snap.customer.days_until_due,
                    metadata={
                        "local_invoice_id": str(iid),
                        "local_customer_id": str(inv.customer_id),
                        "period": inv.period,
                        "source": "billing_core",
                    },
                    description=f"Services for {inv.period}",
                )
                self._mark(iid, "create")
                inv = self._save(iid, stripe_invoice_id=obj.id, push_step="created")
                return inv, "created"
            return self._resume_from(snap, found)
        if inv.push_step in ("created", "lines_added", "finalized") or inv.status == "failed":
            # Resumed from an earlier attempt: Stripe's state decides the next step.
            obj = gw.retrieve_invoice(self.caller, inv.stripe_invoice_id)
            return self._resume_from(snap, obj)
        return inv, inv.push_step

    def _resume_from(self, snap: _Snapshot, obj: stripe.Invoice) -> tuple[Invoice, str]:
        iid = snap.invoice.id or 0
        expected = sum(line.amount_minor for line in snap.lines)
        if obj.status == "draft":
            has_lines = bool(obj.lines and obj.lines.data)
            if has_lines and obj.total != expected:
                raise PaymentProviderError(
                    f"Stripe invoice {obj.id} is a draft with total {obj.total} but the local "
                    f"invoice totals {expected}: check it in the Stripe dashboard before retrying."
                )
            step = "lines_added" if has_lines else "created"
            return self._save(iid, stripe_invoice_id=obj.id, push_step=step), step
        inv = self._sync_from_stripe(iid, obj)
        if obj.status == "open":
            step = "finalized"
            if inv.push_step not in ("finalized",):
                inv = self._save(iid, push_step=step)
            return inv, step
        return inv, inv.push_step

    def _advance(self, inv: Invoice, snap: _Snapshot, step: str) -> tuple[Invoice, str]:
        iid = inv.id or 0
        sid = inv.stripe_invoice_id or ""
        if step == "created":
            lines = [_stripe_line(line, inv) for line in snap.lines]
            obj = gw.add_invoice_lines(
                self.caller, key=f"{self.ns}-inv-{iid}-lines", stripe_invoice_id=sid, lines=lines
            )
            self._mark(iid, "lines")
            if obj.total != inv.total_minor:
                raise PaymentProviderError(
                    f"Stripe totals invoice {sid} at {obj.total} but the draft totals "
                    f"{inv.total_minor} ({inv.currency} minor units); not finalized."
                )
            return self._save(iid, push_step="lines_added"), "lines_added"
        if step == "lines_added":
            obj = gw.finalize_invoice(
                self.caller, key=f"{self.ns}-inv-{iid}-finalize", stripe_invoice_id=sid
            )
            self._mark(iid, "finalize")
            inv = self._sync_from_stripe(iid, obj)
            if obj.status == "paid":  # Stripe settles a zero-amount invoice on finalization
                return inv, "paid"
            return self._save(iid, push_step="finalized"), "finalized"
        if step == "finalized":
            if inv.collection_method == "send_invoice":
                obj = gw.send_invoice(
                    self.caller, key=f"{self.ns}-inv-{iid}-send", stripe_invoice_id=sid
                )
                self._mark(iid, "send")
                self._sync_from_stripe(iid, obj)
                return self._save(iid, push_step="sent", last_error=None), "sent"
            obj = gw.pay_invoice(
                self.caller,
                key=f"{self.ns}-inv-{iid}-pay-{inv.pay_attempt}",
                stripe_invoice_id=sid,
            )
            self._mark(iid, "pay")
            return self._sync_from_stripe(iid, obj), "paid"
        raise ValidationError(f"Invoice {iid} is in an unknown push step {step!r}.")

    def _fail(self, snap: _Snapshot, step: str, exc: stripe.StripeError) -> CustomerProblem:
        inv, cus = snap.invoice, snap.customer
        iid = inv.id or 0
        code = getattr(exc, "code", None)
        # Only a refusal is a failed payment; a network error may have charged (the next run
        # re-reads the invoice from Stripe before paying again, with the same key).
        declined = isinstance(exc, stripe.CardError) or code in gw.PAYMENT_NEEDS_CUSTOMER
        if step == "pay" and declined:
            if code == "invoice_no_payment_method":
                message = (
                    f"{cus.name} has no default payment method in Stripe: the invoice is open "
                    "and was not charged. Ask the customer to add a card, then run again."
                )
            else:
                message = str(gw.describe_error(exc, f"charging invoice {inv.stripe_invoice_id}"))
            # The next attempt needs a new key: Stripe would replay this decline for the old one.
            with session_scope(self.engine) as s:
                fresh = s.get(Invoice, iid)
                assert fresh is not None
                fresh.status = "failed"
                fresh.pay_attempt += 1
                fresh.attempt_count += 1
                fresh.last_error = message
                fresh.updated_at = utcnow()
                s.add(fresh)
            return CustomerProblem(cus.id or 0, cus.name, "pay", message, invoice_id=iid)
        if isinstance(exc, stripe.AuthenticationError):
            self.abort_reason = "Stripe rejected the API key; check STRIPE_API_KEY"
        message = str(gw.describe_error(exc, f"the {step} step of invoice {iid}"))
        self._save(iid, last_error=message)
        return CustomerProblem(cus.id or 0, cus.name, step, message, invoice_id=iid)


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
    if step == "created":
        return "lines"
    if step == "lines_added":
        return "finalize"
    return "pay" if collection_method == "charge_automatically" else "send"


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


# ------------------------------------------------------------------------------- the run


@dataclass
class RunOptions:
    period: Period
    dry_run: bool = False
    customer_id: int | None = None
    trigger: str = "cli"
    actor: str = "system"
    attach_test_cards: bool = False


@dataclass
class RunResult:
    period: str
    run_id: int | None
    status: str
    drafts: DraftSet
    saved: int = 0
    pushed: int = 0
    outcomes: list[PushOutcome] = field(default_factory=list)
    problems: list[CustomerProblem] = field(default_factory=list)
    stripe_calls: int = 0
    fatal: str | None = None

    @property
    def failed(self) -> int:
        return len({p.customer_id for p in self.problems})

    @property
    def exit_code(self) -> int:
        if self.fatal is not None:
            return 2
        return 1 if self.problems else 0


def check_period(period: Period, now: datetime) -> None:
    """Only closed months are invoiced: AWS keeps adding to an open one."""
    if not period.is_closed(now):
        last = Period.containing(now).previous()
        raise ConfigError(
            f"{period} is not closed yet (it ends {period.end.isoformat()} UTC); invoice a "
            f"closed month such as --period {last}."
        )


def effective_rate(settings: Settings) -> float:
    """The client-side Stripe rate limit: the setting if given, else safe for the key's mode."""
    if "stripe_requests_per_second" in settings.model_fields_set:
        return settings.stripe_requests_per_second
    key = settings.stripe_api_key.get_secret_value() if settings.stripe_api_key else ""
    live = key.startswith(("sk_live_", "rk_live_"))
    return DEFAULT_RPS_LIVE if live else DEFAULT_RPS_TEST


def test_cards_allowed(settings: Settings) -> bool:
    """Attaching Stripe test cards is for emulators and test keys, never live accounts."""
    key = settings.stripe_api_key.get_secret_value() if settings.stripe_api_key else ""
    return bool(settings.stripe_api_base) and not key.startswith(("sk_live_", "rk_live_"))


def pending_invoice_ids(session: Session, period: Period, customer_id: int | None) -> list[int]:
    query = (
        select(Invoice.id)
        .where(
            Invoice.period == str(period),
            col(Invoice.is_demo).is_(False),
            col(Invoice.status).not_in(FINAL_STATUSES),
            col(Invoice.push_step).not_in(DONE_STEPS),
        )
        .order_by(col(Invoice.id))
    )
    if customer_id is not None:
        query = query.where(Invoice.customer_id == customer_id)
    return [i for i in session.exec(query).all() if i is not None]


def preview(session: Session, period: Period, *, customer_id: int | None = None) -> DraftSet:
    """What a run would draft now (the CLI's --dry-run and the page's Preview); writes nothing."""
    return build_drafts(session, period, customer_id=customer_id)


def run_invoices(
    engine: Engine,
    settings: Settings,
    opts: RunOptions,
    *,
    now: datetime | None = None,
    run_id: int | None = None,
    client: stripe.StripeClient | None = None,
    progress: Progress | None = None,
    hook: StepHook | None = None,
) -> RunResult:
    """Run the invoicing of a period: lock, drafts, push, summary (the CLI and the worker)."""
    say = progress or (lambda msg: log.info("%s", msg))
    now = now or utcnow()
    check_period(opts.period, now)
    period = str(opts.period)
    if opts.attach_test_cards and not test_cards_allowed(settings):
        raise ConfigError(
            "Test cards can only be attached against a local Stripe emulator "
            "(STRIPE_API_BASE set) with a test key; never on a live account."
        )
    if opts.dry_run:
        with session_scope(engine) as s:
            drafts = preview(s, opts.period, customer_id=opts.customer_id)
        return RunResult(period, None, "preview", drafts)
    client = client or gw.make_client(settings)
    run_id = _start_run(engine, opts, run_id)
    lock = DatabaseLock(
        engine,
        lock_name(period),
        owner=default_owner(run_id),
        stale_seconds=settings.run_lock_stale_seconds,
    )
    try:
        lock.acquire()
    except BillingError as exc:
        _finish_run(engine, run_id, "locked", [{"step": "lock", "message": str(exc)}])
        raise
    lock.on_beat = lambda: _beat_run(engine, run_id)
    lock.start_heartbeat()
    try:
        if lock.took_over_from:
            say(f"took over the stale lock of {lock.took_over_from}")
        return _run_locked(engine, settings, opts, run_id, client, say, hook)
    except Exception as exc:
        _record_stop(engine, run_id, exc)
        raise
    finally:
        lock.stop_heartbeat()
        try:
            lock.release()
        except SQLAlchemyError:  # the database is still unusable: the lock goes stale instead
            log.warning(
                "could not release the run lock %s; it is taken over after %d s without heartbeat",
                lock.name,
                lock.stale_seconds,
            )


def _check_costs(drafts: DraftSet) -> None:
    if not drafts.costs_found:
        raise CostsMissing(
            f"No AWS cost snapshot exists for {drafts.period}, so AWS costs cannot be billed: "
            f"run `python -m billing_core fetch-costs --period {drafts.period}` first."
        )


def _start_run(engine: Engine, opts: RunOptions, run_id: int | None) -> int:
    with session_scope(engine) as s:
        run = s.get(InvoiceRun, run_id) if run_id is not None else None
        if run is None:
            run = InvoiceRun(
                period=str(opts.period),
                trigger=opts.trigger,
                actor=opts.actor,
                customer_filter=opts.customer_id,
            )
        run.status = "running"
        run.started_at = run.heartbeat_at = utcnow()
        s.add(run)
        s.flush()
        return run.id or 0


def _beat_run(engine: Engine, run_id: int) -> None:
    with session_scope(engine) as s:
        run = s.get(InvoiceRun, run_id)
        if run is not None:
            run.heartbeat_at = utcnow()
            s.add(run)


def _finish_run(engine: Engine, run_id: int, status: str, errors: list[dict[str, Any]]) -> None:
    with session_scope(engine) as s:
        run = s.get(InvoiceRun, run_id)
        if run is not None:
            run.status = status
            run.errors = list(run.errors or []) + errors
            run.finished_at = run.heartbeat_at = utcnow()
            s.add(run)


def _record_stop(engine: Engine, run_id: int, exc: Exception) -> None:
    """Say on the run why it stopped (e.g. the database stayed locked), if the database lets us.

    Without this a run stopped by an error stays "running" on the page until the next run.
    """
    message = str(exc) if isinstance(exc, BillingError) else f"unexpected {type(exc).__name__}"
    try:
        with session_scope(engine) as s:
            run = s.get(InvoiceRun, run_id)
            if run is None or run.status != "running":
                return  # already finished with its own message
            run.status = "failed"
            run.errors = [*run.errors, {"step": "run", "message": message}]
            run.finished_at = run.heartbeat_at = utcnow()
            s.add(run)
    except (BillingError, SQLAlchemyError):
        log.warning("could not record why run %s stopped: %s", run_id, message)


def _abandon_others(engine: Engine, period: str, run_id: int) -> int:
    """Runs of this period still marked running died: we hold the lock now."""
    with session_scope(engine) as s:
        stale = s.exec(
            select(InvoiceRun).where(
                InvoiceRun.period == period,
                InvoiceRun.status == "running",
                InvoiceRun.id != run_id,
            )
        ).all()
        for run in stale:
            run.status = "failed"
            run.finished_at = utcnow()
            run.errors = [
                *run.errors,
                {"step": "run", "message": f"stopped before finishing; resumed by run {run_id}"},
            ]
            s.add(run)
        return len(stale)


def _run_locked(
    engine: Engine,
    settings: Settings,
    opts: RunOptions,
    run_id: int,
    client: stripe.StripeClient,
    say: Progress,
    hook: StepHook | None,
) -> RunResult:
    period = str(opts.period)
    _abandon_others(engine, period, run_id)
    try:
        with session_scope(engine) as s:
            drafts = build_drafts(s, opts.period, customer_id=opts.customer_id)
            _check_costs(drafts)
            saved = save_drafts(s, drafts, run_id=run_id)
            namespace = install_id(s)
            run = s.get(InvoiceRun, run_id)
            assert run is not None
            run.costs_estimated = drafts.costs_estimated
            s.add(run)
    except (BillingError, IntegrityError) as exc:
        message = str(exc) if isinstance(exc, BillingError) else "an invoice already exists"
        _finish_run(engine, run_id, "failed", [{"step": "draft", "message": message}])
        raise
    result = RunResult(period, run_id, "running", drafts, saved=len(saved))
    result.problems.extend(drafts.problems)
    estimated = (
        " (AWS costs still estimated: flagged on the invoices)" if drafts.costs_estimated else ""
    )
    say(
        f"{period}: {len(saved)} drafts saved, {len(drafts.already_invoiced)} customers already "
        f"invoiced, {len(drafts.problems)} refused{estimated}"
    )
    for p in drafts.problems:
        say(f"  REFUSED {p.customer}: {p.message}")
    with session_scope(engine) as s:
        todo = pending_invoice_ids(s, opts.period, opts.customer_id)
        run = s.get(InvoiceRun, run_id)
        assert run is not None
        run.total_count = len(todo) + len(drafts.problems)
        run.failed_count = len(drafts.problems)
        run.errors = [p.as_json() for p in drafts.problems]
        s.add(run)
    caller = gw.StripeCaller(client, TokenBucket(effective_rate(settings)))
    pusher = Pusher(
        engine, caller, namespace=namespace, attach_test_cards=opts.attach_test_cards, hook=hook
    )
    say(f"pushing {len(todo)} invoices to Stripe ({settings.stripe_concurrency} at a time)")
    with ThreadPoolExecutor(max_workers=settings.stripe_concurrency) as pool:
        futures = [pool.submit(pusher.push, iid) for iid in todo]
        for future in as_completed(futures):
            outcome = future.result()
            result.outcomes.append(outcome)
            _record_outcome(engine, run_id, outcome)
            amount = display(outcome.total_minor, outcome.currency)
            if outcome.problem is None:
                result.pushed += 1
                say(f"  invoice {outcome.invoice_id} {outcome.customer} {amount}: {outcome.status}")
            else:
                result.problems.append(outcome.problem)
                say(
                    f"  FAILED invoice {outcome.invoice_id} {outcome.customer} {amount}: "
                    f"{outcome.problem.message}"
                )
    result.stripe_calls = caller.calls
    if pusher.abort_reason and not result.pushed:
        result.fatal = pusher.abort_reason
    failed = result.failed
    if result.fatal:
        result.status = "failed"
    elif failed == 0:
        result.status = "succeeded"
    else:
        result.status = "partial" if result.pushed or result.saved > failed else "failed"
    _finish_run(engine, run_id, result.status, [])
    say(
        f"{period}: {result.pushed} pushed, {failed} failed, {len(drafts.already_invoiced)} "
        f"already invoiced, {caller.calls} Stripe calls ({caller.rate_limited} rate-limited) "
        f"-> {result.status}"
    )
    return result


def _record_outcome(engine: Engine, run_id: int, outcome: PushOutcome) -> None:
    """Progress for the page; written only by the run's main thread (no lost updates)."""
    with session_scope(engine) as s:
        run = s.get(InvoiceRun, run_id)
        if run is None:
            return
        run.done_count += 1
        if outcome.problem is not None:
            run.failed_count += 1
            run.errors = [*run.errors, outcome.problem.as_json()]
        run.heartbeat_at = utcnow()
        s.add(run)


def describe_drafts(drafts: DraftSet) -> list[str]:
    """Plain lines for the CLI's --dry-run: one per draft, then problems and totals."""
    out = [f"{drafts.period}: {len(drafts.drafts)} drafts (nothing saved)"]
    if not drafts.costs_found:
        out.append("  WARNING no AWS cost snapshot for this month: run fetch-costs first")
    for d in drafts.drafts:
        flags = f"  [{'; '.join(d.warnings)}]" if d.warnings else ""
        out.append(
            f"  {d.customer_name}: {display(d.total_minor, d.currency)} in {len(d.lines)} lines"
            f"{flags}"
        )
    for p in drafts.problems:
        out.append(f"  REFUSED {p.customer}: {p.message}")
    for name in drafts.already_invoiced:
        out.append(f"  already invoiced: {name}")
    totals = ", ".join(display(v, c) for c, v in sorted(drafts.totals_by_currency().items()))
    out.append(f"  total: {totals or 'nothing'}")
    return out
