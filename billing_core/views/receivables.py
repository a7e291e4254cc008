"""Receivables: what customers still owe, how late it is, and how well billing turns into cash.

Read from the database only, per currency (money is never summed across currencies); amounts are
integer minor units of the currency. Figures are the invoices' state today, seen from `as_of`
(invoices issued after `as_of` are left out; payments are not replayed back in time).

Definitions (the Overview, the invoices page's filters and these tests use these and only these):

- **receivable**: an invoice still due: shown as `open` or `failed` (see invoicing/figures.py)
  with an amount due (`total - amount_paid`) above zero. Paid, refunded, void, draft, credit
  carried forward and below-minimum invoices owe nothing; `uncollectible` ones are written off
  and are not receivables (the invoices page counts them apart).
- **days past due**: whole UTC calendar days from the due date (`Invoice.due_at`) to `as_of`:
  due yesterday is 1 day past due, due today is not yet due.
- **age bucket** (`states.AgeBucket`): current (not yet due, or no due date known), 1-30,
  31-60, 61-90, over 90 days past due.
- **overdue**: a receivable at least one day past due (every bucket but current).
- **failed payments**: receivables whose last charge was declined (`failed`): count and amount due.
- **collection rate**: of the invoices issued in the window (`issued_at` in the last
  `WINDOW_DAYS` days up to `as_of`), paid / billed, as a fraction (0.75 = 75 %), 4 decimals.
  billed and paid are the invoices page's figures: billed is the total of issued invoices
  (open, paid, refunded, failed, uncollectible); paid is what customers paid before refunds.
  None when nothing was billed in the window.
- **DSO** (days sales outstanding): open receivables today / billed in the window x
  `WINDOW_DAYS`, in days, 1 decimal. None when nothing was billed in the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy import select as sa_select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, func

from billing_core.invoicing.figures import OUTSTANDING_STATUSES, Figures, by_currency
from billing_core.models import Invoice, display_status_in, refund_state, shown_status
from billing_core.periods import as_utc
from billing_core.states import AgeBucket, InvoiceOutcome

# The window collection rate and DSO are measured over (days of issued invoices up to as_of).
WINDOW_DAYS = 90

# Inclusive days-past-due bounds of each bucket (None: open-ended).
_BOUNDS: dict[AgeBucket, tuple[int | None, int | None]] = {
    AgeBucket.CURRENT: (None, 0),
    AgeBucket.DAYS_1_30: (1, 30),
    AgeBucket.DAYS_31_60: (31, 60),
    AgeBucket.DAYS_61_90: (61, 90),
    AgeBucket.OVER_90: (91, None),
}
AGE_BUCKETS = tuple(AgeBucket)
BUCKET_LABELS = {
    AgeBucket.CURRENT: "Current",
    AgeBucket.DAYS_1_30: "1–30 days",
    AgeBucket.DAYS_31_60: "31–60 days",
    AgeBucket.DAYS_61_90: "61–90 days",
    AgeBucket.OVER_90: "Over 90 days",
}
OVERDUE_BUCKETS = tuple(b for b in AGE_BUCKETS if b != AgeBucket.CURRENT)


# ------------------------------------------------------------------------------ pure


def days_past_due(due_at: datetime | None, as_of: datetime) -> int | None:
    """Whole UTC calendar days from `due_at` to `as_of` (negative: not due yet; None: no due
    date)."""
    if due_at is None:
        return None
    return (as_utc(as_of).date() - as_utc(due_at).date()).days


def age_bucket(days: int | None) -> AgeBucket:
    """The bucket of a receivable `days` past due (None, zero or negative: current)."""
    if days is None or days <= 0:
        return AgeBucket.CURRENT
    for bucket, (low, high) in _BOUNDS.items():
        if (low is None or days >= low) and (high is None or days <= high):
            return bucket
    raise AssertionError(f"no bucket for {days} days")  # the bounds cover every integer


def _midnight(as_of: datetime, days_back: int) -> datetime:
    day = as_utc(as_of).date() - timedelta(days=days_back)
    return datetime.combine(day, time(0), tzinfo=UTC)


def due_range(bucket: AgeBucket, as_of: datetime) -> tuple[datetime | None, datetime | None]:
    """The half-open [from, before) range of due dates (UTC) whose invoices are in `bucket`
    at `as_of`; None: unbounded. Invoices without a due date are current as well."""
    low, high = _BOUNDS[bucket]
    # d days past due <=> due on the day `d` days before as_of's day.
    start = _midnight(as_of, high) if high is not None else None
    before = _midnight(as_of, low - 1) if low is not None else None
    return start, before


def _ratio(numerator: int, denominator: int, places: str) -> Decimal | None:
    if denominator <= 0:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(
        Decimal(places), rounding=ROUND_HALF_UP
    )


# ------------------------------------------------------------------------------ SQL clauses


def receivable_clause() -> ColumnElement[bool]:
    """SQL: the invoice is a receivable (open or failed, something still due)."""
    return and_(
        display_status_in(OUTSTANDING_STATUSES),
        col(Invoice.total_minor) > col(Invoice.amount_paid_minor),
    )


def bucket_clause(buckets: tuple[str, ...], as_of: datetime) -> ColumnElement[bool]:
    """SQL: the invoice is a receivable in one of `buckets` (AgeBucket values) at `as_of`."""
    due = col(Invoice.due_at)
    ranges: list[ColumnElement[bool]] = []
    for word in buckets:
        bucket = AgeBucket(word)
        start, before = due_range(bucket, as_of)
        parts = [due >= start] if start is not None else []
        parts += [due < before] if before is not None else []
        test = and_(due.is_not(None), *parts)
        ranges.append(or_(due.is_(None), test) if bucket == AgeBucket.CURRENT else test)
    return and_(receivable_clause(), or_(*ranges))


def overdue_clause(as_of: datetime) -> ColumnElement[bool]:
    """SQL: the invoice is a receivable at least one day past due at `as_of`."""
    return bucket_clause(OVERDUE_BUCKETS, as_of)


# ------------------------------------------------------------------------------ summary


@dataclass
class BucketFigures:
    """Receivables of one age bucket: how many, and the amount due (minor units)."""

    bucket: AgeBucket
    count: int = 0
    amount_minor: int = 0

    @property
    def label(self) -> str:
        return BUCKET_LABELS[self.bucket]


def _empty_buckets() -> dict[AgeBucket, BucketFigures]:
    return {b: BucketFigures(b) for b in AGE_BUCKETS}


@dataclass
class ReceivablesSummary:
    """One currency's receivables at `as_of` (amounts in minor units of `currency`).

    buckets holds every AgeBucket in order (current first), empty ones included; their amounts
    sum to open_minor and their counts to open_count. undated_*: receivables without a due
    date, counted as current. billed/paid_in_window: invoices issued in
    [window_start, as_of], the base of collection_rate and dso_days (see the module's
    definitions).
    """

    currency: str
    as_of: datetime
    window_start: datetime
    window_days: int = WINDOW_DAYS
    open_count: int = 0
    open_minor: int = 0
    overdue_count: int = 0
    overdue_minor: int = 0
    failed_count: int = 0
    failed_minor: int = 0
    undated_count: int = 0
    undated_minor: int = 0
    buckets: dict[AgeBucket, BucketFigures] = field(default_factory=_empty_buckets)
    invoices_in_window: int = 0
    billed_in_window_minor: int = 0
    paid_in_window_minor: int = 0

    @property
    def collection_rate(self) -> Decimal | None:
        """paid / billed of the window's invoices, a fraction with 4 decimals (None: no bills)."""
        return _ratio(self.paid_in_window_minor, self.billed_in_window_minor, "0.0001")

    @property
    def dso_days(self) -> Decimal | None:
        """open receivables / billed in the window x window days, 1 decimal (None: no bills)."""
        if self.billed_in_window_minor <= 0:
            return None
        days = Decimal(self.open_minor) * self.window_days / Decimal(self.billed_in_window_minor)
        return days.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)

    def add_receivable(self, *, failed: bool, due_minor: int, days: int | None) -> None:
        """Count one receivable with `due_minor` still due, `days` past due (None: no date)."""
        bucket = age_bucket(days)
        self.open_count += 1
        self.open_minor += due_minor
        self.buckets[bucket].count += 1
        self.buckets[bucket].amount_minor += due_minor
        if bucket != AgeBucket.CURRENT:
            self.overdue_count += 1
            self.overdue_minor += due_minor
        if failed:
            self.failed_count += 1
            self.failed_minor += due_minor
        if days is None:
            self.undated_count += 1
            self.undated_minor += due_minor


def _not_issued_after(as_of: datetime) -> ColumnElement[bool]:
    issued = col(Invoice.issued_at)
    return or_(issued.is_(None), issued <= as_of)


def _window_figures(session: Session, start: datetime, as_of: datetime) -> dict[str, Figures]:
    """Per currency, the invoices page's figures of the invoices issued in [start, as_of]."""
    query: Any = (
        sa_select(
            col(Invoice.currency),
            col(Invoice.status),
            col(Invoice.outcome),
            refund_state(),
            func.count(),
            func.sum(col(Invoice.total_minor)),
            func.sum(col(Invoice.amount_paid_minor)),
            func.sum(col(Invoice.amount_refunded_minor)),
        )
        .where(col(Invoice.issued_at) >= start, col(Invoice.issued_at) <= as_of)
        .group_by(col(Invoice.currency), col(Invoice.status), col(Invoice.outcome), refund_state())
    )
    figures: dict[str, Figures] = {}
    for currency, status, outcome, state, count, total, paid, refunded in session.execute(query):
        by_currency(figures, currency).add(
            shown_status(status, outcome, state),
            count=int(count),
            total=int(total or 0),
            paid=int(paid or 0),
            refunded=int(refunded or 0),
        )
    return figures


def receivables_summary(
    session: Session, *, as_of: datetime, window_days: int = WINDOW_DAYS
) -> dict[str, ReceivablesSummary]:
    """Per currency (sorted by code), the receivables at `as_of` (aware datetime): amounts due
    by age bucket, overdue, failed payments, collection rate and DSO over the last
    `window_days` days. A currency appears when it has a receivable or an invoice issued in
    the window. Reads only the receivables row by row (a small share of all invoices); the
    window is aggregated in SQL."""
    as_of = as_utc(as_of)
    start = as_of - timedelta(days=window_days)
    out: dict[str, ReceivablesSummary] = {}

    def summary(currency: str) -> ReceivablesSummary:
        if currency not in out:
            out[currency] = ReceivablesSummary(currency, as_of, start, window_days)
        return out[currency]

    rows = session.execute(
        sa_select(
            col(Invoice.currency),
            col(Invoice.outcome),
            col(Invoice.total_minor),
            col(Invoice.amount_paid_minor),
            col(Invoice.due_at),
        ).where(receivable_clause(), _not_issued_after(as_of))
    ).all()
    for currency, outcome, total, paid, due_at in rows:
        summary(currency).add_receivable(
            failed=outcome == InvoiceOutcome.PAYMENT_FAILED,
            due_minor=int(total) - int(paid),
            days=days_past_due(due_at, as_of),
        )
    for currency, fig in _window_figures(session, start, as_of).items():
        s = summary(currency)
        s.invoices_in_window = fig.count
        s.billed_in_window_minor = fig.billed
        s.paid_in_window_minor = fig.paid
    return {c: out[c] for c in sorted(out)}
