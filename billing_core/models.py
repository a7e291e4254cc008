"""Tables (DESIGN.md section 4). Money is integer minor units; raw figures are exact decimals.

Unique keys here are what stop double billing: one live (not void) invoice per customer and
period, one usage record per idempotency key, one stored Stripe event per event id, one credit
note in flight per invoice.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Index,
    Text,
    UniqueConstraint,
    and_,
    case,
    func,
    literal_column,
    or_,
    text,
)
from sqlmodel import Field, SQLModel, col

from billing_core.periods import utcnow
from billing_core.sqltypes import ExactDecimal, StrEnumType, UTCDateTime
from billing_core.states import (
    OUTCOME_DISPLAY,
    REFUND_DISPLAY,
    CreditState,
    DiffResolution,
    DiffStatus,
    DisplayStatus,
    EventOutcome,
    InvoiceOutcome,
    InvoiceStatus,
    LineKind,
    PushStep,
    ReconciliationStatus,
    RunStatus,
    credit_state,
    display_status,
)


def _now_field(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, **kw)


def _time_field(*, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, index=index)


def _version_field() -> Any:
    # Optimistic concurrency: every change adds one; an admin action names the version it saw
    # and is refused when the row moved on (billing_core/versions.py).
    return Field(default=1, sa_column_kwargs={"server_default": "1"})


# Plans: base fee, markup on AWS costs, included usage and overage prices.
class Plan(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    currency: str = Field(max_length=3)
    base_fee_minor: int = 0
    markup_pct: Decimal = Field(default=Decimal(0), sa_type=ExactDecimal(6))
    aws_spend_limit_minor: int | None = None
    # Monthly minimum spend (plan currency, minor units): a "minimum commitment" line tops up.
    minimum_spend_minor: int | None = None
    # AWS record type (Credit, Refund, Tax, ...) -> pass_through | at_cost | keep (absent:
    # pass_through, the behaviour before pricing rules). See invoicing/aws_rules.py.
    adjustments: dict[str, str] = Field(
        default_factory=dict,
        sa_column=Column(JSON, nullable=False, server_default=text("'{}'")),
    )
    active: bool = True
    created_at: datetime = _now_field()
    updated_at: datetime = _now_field()
    updated_by: str | None = None
    version: int = _version_field()


# One usage metric of a plan: included quantity and the unit price above it.
class PlanMetric(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("plan_id", "metric"),)
    id: int | None = Field(default=None, primary_key=True)
    plan_id: int = Field(foreign_key="plan.id", index=True)
    metric: str
    unit: str = ""
    included_quantity: Decimal = Field(default=Decimal(0), sa_type=ExactDecimal(6))
    # Unit price in the plan currency's major units; may hold fractions of a cent.
    overage_unit_price: Decimal = Field(default=Decimal(0), sa_type=ExactDecimal(10))
    # How the period's records become the billable quantity: "sum" for cumulative metrics
    # (API calls), "max" for levels (seats, storage): the period's peak.
    aggregation: str = Field(default="sum", sa_column_kwargs={"server_default": "sum"})
    # How usage above the included quantity is priced (invoicing/charge_models.py): per_unit,
    # graduated, volume (tiers in plantier) or package (overage_unit_price per package_size).
    charge_model: str = Field(default="per_unit", sa_column_kwargs={"server_default": "per_unit"})
    package_size: Decimal | None = Field(default=None, sa_type=ExactDecimal(6))


# A customer we bill, with how its AWS costs are recognised.
class Customer(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str
    email: str = Field(unique=True, index=True)
    currency: str = Field(max_length=3)
    plan_id: int | None = Field(default=None, foreign_key="plan.id", index=True)
    # A plan change recorded now applies from this period on (YYYY-MM).
    next_plan_id: int | None = Field(default=None, foreign_key="plan.id")
    next_plan_from: str | None = None
    collection_method: str = "charge_automatically"  # or send_invoice
    days_until_due: int = 30
    stripe_customer_id: str | None = Field(default=None, unique=True, index=True)
    cost_tag_value: str | None = Field(default=None, index=True)
    default_payment_method: str | None = None  # e.g. "card visa 4242"
    active: bool = True
    is_demo: bool = False
    created_at: datetime = _now_field()
    updated_at: datetime = _now_field()
    updated_by: str | None = None
    version: int = _version_field()


# An AWS linked account attributed to a customer (one customer per account).
class CustomerAccount(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    account_id: str = Field(unique=True, index=True, max_length=12)


# What prices a customer's months from `effective_from` (YYYY-MM) until its next row: plan,
# invoice currency, AWS linked accounts and cost-allocation tag value (customers/terms.py).
class CustomerTerms(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("customer_id", "effective_from"),)
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    effective_from: str
    plan_id: int | None = Field(default=None, foreign_key="plan.id")
    currency: str = Field(max_length=3)
    cost_tag_value: str | None = None
    account_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _now_field()


# One fetch of Cost Explorer data for a period; lines belong to exactly one snapshot.
class CostSnapshot(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    period: str = Field(index=True)
    granularity: str  # DAILY or MONTHLY
    group_by: str  # LINKED_ACCOUNT or TAG:<key>
    metric: str
    currency: str = "USD"
    estimated: bool = False
    request_count: int = 0
    source: str = "cost_explorer"  # or demo
    status: str = "complete"
    fetched_at: datetime = _now_field(index=True)
    forecast_amount: Decimal | None = Field(default=None, sa_type=ExactDecimal(10))


# One Cost Explorer figure: a day (or month), an account or tag value, a service, a record type.
class CostLine(SQLModel, table=True):
    __table_args__ = (
        Index("ix_costline_snapshot_day", "snapshot_id", "day"),
        Index("ix_costline_snapshot_account", "snapshot_id", "account_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    snapshot_id: int = Field(foreign_key="costsnapshot.id")
    period: str = Field(index=True)
    day: str  # YYYY-MM-DD, first day of the bucket
    account_id: str | None = None
    tag_value: str | None = None
    service: str
    record_type: str = "Usage"  # Usage, Credit, Refund, Tax, Support fee...
    amount: Decimal = Field(sa_type=ExactDecimal(10))
    currency: str = "USD"
    estimated: bool = False
    fetched_at: datetime = _now_field()


# A usage figure reported for a customer; the idempotency key makes re-imports harmless.
class UsageRecord(SQLModel, table=True):
    __table_args__ = (Index("ix_usage_customer_period", "customer_id", "period", "metric"),)
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id")
    metric: str
    quantity: Decimal = Field(sa_type=ExactDecimal(6))
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    period: str
    source: str = "import"
    idempotency_key: str = Field(unique=True)
    created_at: datetime = _now_field()


# A monthly exchange rate from the cost currency to an invoice currency, with its source.
class ExchangeRate(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("period", "base", "quote"),)
    id: int | None = Field(default=None, primary_key=True)
    period: str
    base: str = "USD"
    quote: str
    rate: Decimal = Field(sa_type=ExactDecimal(10))
    source: str
    created_at: datetime = _now_field()


# The rows the one-active-run index covers: requested or running, not a dry run (the same SQL
# on SQLite and PostgreSQL; the migration runs_1 creates the index with it).
ACTIVE_RUN_WHERE = "status IN ('requested', 'running') AND dry_run = false"


# One invocation of the invoicing job (CLI, cron or the admin button).
class InvoiceRun(SQLModel, table=True):
    # One active run per period, enforced by the database: concurrent Run clicks (several
    # admins, several dashboard servers) converge on one row instead of racing a check.
    __table_args__ = (
        Index(
            "uq_invoicerun_active_period",
            "period",
            unique=True,
            sqlite_where=text(ACTIVE_RUN_WHERE),
            postgresql_where=text(ACTIVE_RUN_WHERE),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    period: str = Field(index=True)
    trigger: str = "cli"  # cli, cron, button
    actor: str = "system"
    status: RunStatus = Field(default=RunStatus.REQUESTED, sa_type=StrEnumType(RunStatus))
    dry_run: bool = False
    customer_filter: int | None = None
    costs_estimated: bool = False
    # The cost figures the run priced from: metric, grouping (LINKED_ACCOUNT or TAG:<key>) and
    # the snapshot (None before drafting, or when the month had no snapshot).
    cost_metric: str | None = None
    cost_group_by: str | None = None
    cost_snapshot_id: int | None = None
    total_count: int = 0
    done_count: int = 0
    failed_count: int = 0
    errors: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    requested_at: datetime = _now_field()
    started_at: datetime | None = _time_field()
    finished_at: datetime | None = _time_field()
    heartbeat_at: datetime | None = _time_field()


# The per-period run lock; the primary key makes taking it atomic on any database.
class RunLock(SQLModel, table=True):
    name: str = Field(primary_key=True)  # e.g. "invoice-run:2026-10"
    owner: str  # host:pid:run id
    token: str
    acquired_at: datetime = _now_field()
    heartbeat_at: datetime = _now_field()


# The invoices that bill a customer's month: all but void ones (the same SQL on SQLite and
# PostgreSQL; the migration corrections_1 creates the index with it).
LIVE_INVOICE_WHERE = "status <> 'void'"


# An invoice, local first; Stripe ids are filled in as each push step succeeds.
class Invoice(SQLModel, table=True):
    # One live invoice per customer and month, enforced by the database; a void invoice may be
    # followed by a new revision (void and reissue), each revision number once.
    __table_args__ = (
        UniqueConstraint("customer_id", "period", "revision", name="uq_invoice_revision"),
        Index(
            "uq_invoice_live_customer_period",
            "customer_id",
            "period",
            unique=True,
            sqlite_where=text(LIVE_INVOICE_WHERE),
            postgresql_where=text(LIVE_INVOICE_WHERE),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    period: str = Field(index=True)
    # 1 for the first invoice of the month; a reissue after a void is the next revision and
    # names the invoice it replaces (Stripe's word for it: `from_invoice`, action revision).
    revision: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    replaces_invoice_id: int | None = Field(default=None, foreign_key="invoice.id")
    currency: str = Field(max_length=3)
    # Stripe's status as Stripe has it; what happened locally is the outcome (see states.py).
    status: InvoiceStatus = Field(
        default=InvoiceStatus.DRAFT, index=True, sa_type=StrEnumType(InvoiceStatus)
    )
    outcome: InvoiceOutcome | None = Field(
        default=None, index=True, sa_type=StrEnumType(InvoiceOutcome)
    )
    subtotal_minor: int = 0
    tax_minor: int = 0
    total_minor: int = 0
    amount_paid_minor: int = 0
    # Refunded so far on the invoice's payment (mirrored from Stripe's charge.refunded).
    amount_refunded_minor: int = 0
    # Credit notes as Stripe totals them on the invoice: what lowered the amount due (before
    # payment) and what was credited after it (refund, customer balance, out of band).
    pre_payment_credit_notes_minor: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    post_payment_credit_notes_minor: int = Field(
        default=0, sa_column_kwargs={"server_default": "0"}
    )
    cost_currency: str = "USD"
    fx_rate: Decimal | None = Field(default=None, sa_type=ExactDecimal(10))
    fx_source: str | None = None
    costs_estimated: bool = False
    # The cost figures its AWS lines were priced from (see InvoiceRun); None on older invoices.
    cost_metric: str | None = None
    cost_group_by: str | None = None
    cost_snapshot_id: int | None = None
    collection_method: str = "charge_automatically"
    # Bill-to details as issued (Stripe's invoice field names), kept from when the draft was
    # saved: renaming the customer later never rewrites an invoice's history. Address and tax
    # ids are known only from Stripe's finalized invoice; None where unknown.
    customer_name: str | None = None
    customer_email: str | None = None
    customer_address: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    customer_tax_ids: list[Any] | None = Field(default=None, sa_column=Column(JSON))
    # Push progress: none, created, lines_added, finalized, paid, sent (see invoicing).
    push_step: PushStep = Field(default=PushStep.NONE, sa_type=StrEnumType(PushStep))
    stripe_invoice_id: str | None = Field(default=None, unique=True, index=True)
    # The PaymentIntent that paid it: how a refunded charge finds its invoice.
    stripe_payment_intent_id: str | None = Field(default=None, index=True)
    number: str | None = None
    hosted_invoice_url: str | None = None
    invoice_pdf: str | None = None
    attempt_count: int = 0
    next_payment_attempt: datetime | None = _time_field()
    pay_attempt: int = 0  # bumps the pay step's idempotency key after a decline
    # Bumped when the invoice moves to a re-linked Stripe customer: every step's key is new.
    key_generation: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    run_id: int | None = Field(default=None, foreign_key="invoicerun.id", index=True)
    is_demo: bool = False
    issued_at: datetime | None = _time_field()
    # When payment is due: Stripe's `due_date` for send-invoice invoices; for invoices charged
    # automatically, the attempt date (finalization), since the charge is tried then.
    due_at: datetime | None = _time_field()
    paid_at: datetime | None = _time_field()
    created_at: datetime = _now_field()
    updated_at: datetime = _now_field()

    @property
    def display_status(self) -> DisplayStatus:
        """The one word people see: the local outcome if any, else Stripe's status."""
        return display_status(
            self.status,
            self.outcome,
            paid_minor=self.amount_paid_minor,
            refunded_minor=self.amount_refunded_minor,
        )

    @property
    def credited_minor(self) -> int:
        """What credit notes took back from the invoice, before and after payment."""
        return self.pre_payment_credit_notes_minor + self.post_payment_credit_notes_minor

    @property
    def credit_state(self) -> CreditState:
        """None, partially credited, credited or refunded, from Stripe's credit note totals."""
        return credit_state(self.total_minor, self.credited_minor, self.amount_refunded_minor)

    @property
    def due_minor(self) -> int:
        """What the customer is still asked for: total less payments and pre-payment credit."""
        return max(
            0, self.total_minor - self.amount_paid_minor - self.pre_payment_credit_notes_minor
        )


def bill_to_name() -> Any:
    """SQL: the name an invoice was issued to (the customer's current one for older rows
    written before bill-to details were kept). Select from Invoice joined to Customer."""
    return func.coalesce(col(Invoice.customer_name), col(Customer.name))


def refund_state() -> Any:
    """SQL: 0 when nothing of an invoice's payment was refunded, 1 part of it, 2 all of it;
    `shown_status` turns (status, outcome, refund state) into the word people see."""
    refunded = col(Invoice.amount_refunded_minor)
    # Constants as SQL text, not bound parameters: the expression is grouped by, and PostgreSQL
    # matches a GROUP BY expression to the selected one only when both render the same.
    zero: Any = literal_column("0")
    one: Any = literal_column("1")
    two: Any = literal_column("2")
    return case(
        (refunded <= zero, zero), (refunded >= col(Invoice.amount_paid_minor), two), else_=one
    )


def shown_status(status: str, outcome: str | None, state: int) -> DisplayStatus:
    """The display status of a row grouped by (status, outcome, refund_state())."""
    # Representative (paid, refunded) amounts of each refund state.
    paid, refunded = {0: (0, 0), 1: (2, 1), 2: (1, 1)}[int(state)]
    return display_status(status, outcome, paid_minor=paid, refunded_minor=refunded)


def display_status_in(words: Iterable[str]) -> ColumnElement[bool]:
    """SQL: the invoice's display status is one of `words` (see states.display_status)."""
    shown = {DisplayStatus(word) for word in words}
    outcomes = [outcome for outcome, word in OUTCOME_DISPLAY.items() if word in shown]
    local = set(OUTCOME_DISPLAY.values()) | set(REFUND_DISPLAY) | {DisplayStatus.PAID}
    statuses = [InvoiceStatus(w.value) for w in shown if w not in local]
    no_outcome = col(Invoice.outcome).is_(None)
    paid = and_(no_outcome, col(Invoice.status) == InvoiceStatus.PAID)
    refunded = col(Invoice.amount_refunded_minor)
    paid_words = {
        DisplayStatus.PAID: refunded <= 0,
        DisplayStatus.PARTIALLY_REFUNDED: and_(
            refunded > 0, refunded < col(Invoice.amount_paid_minor)
        ),
        DisplayStatus.REFUNDED: and_(refunded > 0, refunded >= col(Invoice.amount_paid_minor)),
    }
    return or_(
        and_(col(Invoice.outcome).is_not(None), col(Invoice.outcome).in_(outcomes)),
        and_(no_outcome, col(Invoice.status).in_(statuses)),
        *(and_(paid, test) for word, test in paid_words.items() if word in shown),
    )


# One line of an invoice; amount_minor is rounded once, the invoice total is their sum.
class InvoiceLine(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    position: int = 0
    kind: LineKind = Field(sa_type=StrEnumType(LineKind))
    description: str
    service: str | None = None
    metric: str | None = None
    quantity: Decimal = Field(default=Decimal(1), sa_type=ExactDecimal(6))
    unit_amount: Decimal = Field(default=Decimal(0), sa_type=ExactDecimal(10))
    amount_minor: int
    # How the line was priced (the rule, charge model or commitment) and, for AWS lines, the
    # cost at AWS rates in USD: what the preview and the invoice detail explain.
    pricing_rule: str | None = Field(default=None, sa_column=Column(Text))
    aws_cost: Decimal | None = Field(default=None, sa_type=ExactDecimal(10))


# An adjustment scheduled for a later invoice (e.g. AWS restated a closed month).
class TrueUp(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    source_period: str
    description: str
    amount_minor: int
    currency: str = Field(max_length=3)
    diff_id: int | None = Field(default=None, foreign_key="reconciliationdiff.id")
    applied_invoice_id: int | None = Field(default=None, foreign_key="invoice.id")
    created_by: str = "system"
    created_at: datetime = _now_field()


# Every Stripe event we received, stored raw before it is applied.
class StripeEvent(SQLModel, table=True):
    id: str = Field(primary_key=True)  # evt_...
    type: str = Field(index=True)
    created: datetime = Field(sa_type=UTCDateTime, index=True)
    object_id: str | None = Field(default=None, index=True)
    # The local invoice the event concerns, once known: the invoice's event timeline.
    invoice_id: int | None = Field(default=None, index=True)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    source: str = "sync"  # sync or webhook
    received_at: datetime = _now_field()
    processed_at: datetime | None = _time_field()
    outcome: EventOutcome | None = Field(default=None, sa_type=StrEnumType(EventOutcome))
    error: str | None = Field(default=None, sa_column=Column(Text))  # the last failure's
    # Failed applications so far; a failed event is tried again from next_attempt_at (backoff)
    # until it applies or reaches the cap, when next_attempt_at is None and it stays failed.
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    next_attempt_at: datetime | None = _time_field(index=True)
    # What the event meant, read from Stripe when applied: a failed payment's reason (from the
    # PaymentIntent's last_payment_error; Stripe keeps only the latest there).
    detail: str | None = Field(default=None, sa_column=Column(Text))


# Small named cursors and markers (e.g. the last synced Stripe event).
class SyncState(SQLModel, table=True):
    name: str = Field(primary_key=True)
    value: str
    updated_at: datetime = _now_field()


# One reconciliation pass over a period.
class ReconciliationRun(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    period: str = Field(index=True)
    actor: str = "system"
    status: ReconciliationStatus = Field(
        default=ReconciliationStatus.RUNNING, sa_type=StrEnumType(ReconciliationStatus)
    )
    tolerance_pct: Decimal = Field(default=Decimal("0.5"), sa_type=ExactDecimal(6))
    counts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    stripe_requests: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    started_at: datetime = _now_field()
    finished_at: datetime | None = _time_field()


# A difference found by reconciliation; (period, kind, subject) makes re-runs update it.
class ReconciliationDiff(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("period", "kind", "subject"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: int | None = Field(default=None, foreign_key="reconciliationrun.id")
    period: str = Field(index=True)
    kind: str
    subject: str  # stable key: invoice id, stripe id, customer/service...
    customer_id: int | None = Field(default=None, foreign_key="customer.id")
    invoice_id: int | None = Field(default=None, foreign_key="invoice.id")
    currency: str | None = None
    local_value: str | None = None
    remote_value: str | None = None
    delta_minor: int = 0
    within_tolerance: bool = False
    status: DiffStatus = Field(default=DiffStatus.OPEN, sa_type=StrEnumType(DiffStatus))
    resolution: DiffResolution | None = Field(default=None, sa_type=StrEnumType(DiffResolution))
    resolution_note: str | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = _time_field()
    first_seen_at: datetime = _now_field()
    last_seen_at: datetime = _now_field()
    updated_at: datetime | None = _time_field()
    updated_by: str | None = None
    version: int = _version_field()


# A usage or spend alert, once per customer, metric, threshold and period.
class Alert(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("customer_id", "metric", "threshold_pct", "period"),)
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    metric: str
    threshold_pct: int
    period: str
    value: Decimal = Field(sa_type=ExactDecimal(6))
    limit: Decimal = Field(sa_type=ExactDecimal(6))
    message: str
    created_at: datetime = _now_field()
    published_at: datetime | None = _time_field()
    acknowledged_at: datetime | None = _time_field()


# Who did what, when, to what; before/after hold plain JSON without secrets.
class AuditEntry(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _now_field(index=True)
    actor: str = Field(index=True)
    action: str = Field(index=True)
    target: str
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


# One step of collections (a reminder, the final notice, uncollectible) for one invoice. The
# unique key is the claim: a pass inserts the row BEFORE calling Stripe, so two cron hosts never
# both take the step, and a claim left by a crash (never `done`) is finished by a later pass.
class CollectionStep(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("invoice_id", "step", name="uq_collectionstep_invoice_step"),
    )
    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    step: str  # reminder-3, reminder+7, final_notice, uncollectible (payments/dunning.py)
    status: str = "claimed"  # claimed, done, failed
    day: int = 0  # the policy day the step belongs to
    days_past_due: int = 0  # of the invoice when the step was claimed
    idempotency_key: str
    claimed_by: str  # host:pid of the pass holding the claim
    claimed_at: datetime = Field(sa_type=UTCDateTime)
    attempts: int = 1  # claims so far; a takeover compares and bumps it
    done_at: datetime | None = _time_field(index=True)
    actor: str = "cron"
    error: str | None = Field(default=None, sa_column=Column(Text))


# Corrections (credit notes and their lines, invoice voids) live in their wing; imported here so
# that every table is known wherever the models are (migrations, tests, `from ... import`).
from billing_core.corrections.models import (  # noqa: E402
    ISSUING_CREDIT_NOTE_WHERE,
    CreditNote,
    CreditNoteLine,
    InvoiceVoid,
)

__all__ = ["ISSUING_CREDIT_NOTE_WHERE", "CreditNote", "CreditNoteLine", "InvoiceVoid"]


# Pricing rules' tables (customers wing) and cost rollups (costs wing): registered here too.
from billing_core.costs.rollup_tables import *  # noqa: E402, F403
from billing_core.customers import pricing_tables  # noqa: E402, F401

__all__ += ["CostAccountDailyRollup", "CostAccountRollup", "CostDailyRollup", "CostRollup"]  # noqa: F405
