"""Named states. Each enum says whose values it holds: Stripe's, mirrored as Stripe spells them,
or ours. Members equal their strings, so stored values and comparisons with plain text hold.

An invoice keeps Stripe's status apart from what happened to it locally (as Lago keeps
`status` apart from `payment_status`): `Invoice.status` is an `InvoiceStatus`, `Invoice.outcome`
an `InvoiceOutcome` or None. People see one word, `display_status()`, derived from the two.
"""

from __future__ import annotations

from enum import StrEnum


class InvoiceStatus(StrEnum):
    """Stripe's invoice statuses, as Stripe has them; a local invoice not in Stripe is a draft."""

    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    UNCOLLECTIBLE = "uncollectible"
    VOID = "void"


class InvoiceOutcome(StrEnum):
    """Ours: what happened to an invoice that Stripe's status does not say (None: nothing)."""

    PAYMENT_FAILED = "payment_failed"  # a charge was declined; Stripe keeps the invoice open
    CREDIT_CARRIED = "credit_carried"  # negative total: never sent, carried to the next period
    # Positive but below Stripe's minimum charge for its currency: never sent, carried to the
    # next period as a true-up (Stripe would refuse to charge it).
    BELOW_MINIMUM = "below_minimum"


# Outcomes of invoices never sent to Stripe: their amount is carried to the next period.
CARRIED_OUTCOMES = frozenset({InvoiceOutcome.CREDIT_CARRIED, InvoiceOutcome.BELOW_MINIMUM})


class DisplayStatus(StrEnum):
    """Ours: the one word pages, CSV exports and `export-invoices --status` show and accept."""

    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    FAILED = "failed"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"
    CREDIT = "credit"
    CARRIED = "carried"  # below Stripe's minimum charge: carried to the next month
    # Paid, then money went back (Stripe keeps the invoice `paid`; the charge says refunded).
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"


# Shown words that are Stripe's `paid` with some or all of the payment refunded.
REFUND_DISPLAY = (DisplayStatus.REFUNDED, DisplayStatus.PARTIALLY_REFUNDED)


# The words a local outcome shows as; without an outcome Stripe's status is the word.
OUTCOME_DISPLAY = {
    InvoiceOutcome.PAYMENT_FAILED: DisplayStatus.FAILED,
    InvoiceOutcome.CREDIT_CARRIED: DisplayStatus.CREDIT,
    InvoiceOutcome.BELOW_MINIMUM: DisplayStatus.CARRIED,
}


# Stripe's status under each shown word that comes from a local outcome.
_OUTCOME_STATUS = {
    DisplayStatus.FAILED: (InvoiceStatus.OPEN, InvoiceOutcome.PAYMENT_FAILED),
    DisplayStatus.CREDIT: (InvoiceStatus.DRAFT, InvoiceOutcome.CREDIT_CARRIED),
    DisplayStatus.CARRIED: (InvoiceStatus.DRAFT, InvoiceOutcome.BELOW_MINIMUM),
}


def display_status(
    status: str, outcome: str | None, *, paid_minor: int = 0, refunded_minor: int = 0
) -> DisplayStatus:
    """The word people see for an invoice: its local outcome if any, else Stripe's status; a
    paid invoice whose payment was refunded (minor units) shows as refunded, wholly or partly."""
    if outcome:
        return OUTCOME_DISPLAY[InvoiceOutcome(outcome)]
    shown = DisplayStatus(InvoiceStatus(status).value)
    if shown == DisplayStatus.PAID and refunded_minor > 0:
        whole = refunded_minor >= paid_minor
        return DisplayStatus.REFUNDED if whole else DisplayStatus.PARTIALLY_REFUNDED
    return shown


def split_display_status(word: str) -> tuple[InvoiceStatus, InvoiceOutcome | None]:
    """The (status, outcome) pair a shown word stands for (failed: open with a failed charge)."""
    shown = DisplayStatus(word)
    if shown in _OUTCOME_STATUS:
        return _OUTCOME_STATUS[shown]
    if shown in REFUND_DISPLAY:
        return InvoiceStatus.PAID, None  # the refund is in the amounts, not the status
    return InvoiceStatus(shown.value), None


class PushStep(StrEnum):
    """Ours: how far an invoice's push to Stripe got (each step saved before the next call)."""

    NONE = "none"
    CREATING = "creating"
    CREATED = "created"
    LINES_ADDED = "lines_added"
    FINALIZED = "finalized"
    PAID = "paid"
    SENT = "sent"


class LineKind(StrEnum):
    """Ours: what an invoice line bills."""

    BASE_FEE = "base_fee"
    AWS = "aws"
    OVERAGE = "overage"
    TRUE_UP = "true_up"
    CREDIT = "credit"


class RunStatus(StrEnum):
    """Ours: an invoice run's state (InvoiceRun.status)."""

    REQUESTED = "requested"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    LOCKED = "locked"


class ReconciliationStatus(StrEnum):
    """Ours: a reconciliation run's state (ReconciliationRun.status)."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


class DiffStatus(StrEnum):
    """Ours: a reconciliation diff's state (ReconciliationDiff.status)."""

    OPEN = "open"
    RESOLVED = "resolved"
    GONE = "gone"


class DiffResolution(StrEnum):
    """Ours: how an admin resolved a diff (ReconciliationDiff.resolution)."""

    SYNCED = "synced"
    ACCEPTED = "accepted"
    TRUE_UP = "true_up"


class EventOutcome(StrEnum):
    """Ours: what applying a stored Stripe event did (StripeEvent.outcome; None: not yet)."""

    APPLIED = "applied"
    IGNORED = "ignored"  # a type we do not act on: stored and visible, nothing changed
    UNMATCHED = "unmatched"  # about an object we do not know locally (a finding is recorded)
    ERROR = "error"  # the object is gone from Stripe or the event cannot be applied


class AgeBucket(StrEnum):
    """Ours: how long an unpaid invoice is past its due date, in whole UTC calendar days
    (the receivables aging of views/receivables.py; the values are the invoices page's
    `?bucket=` words)."""

    CURRENT = "current"  # not yet due (due today counts as not yet due)
    DAYS_1_30 = "1-30"
    DAYS_31_60 = "31-60"
    DAYS_61_90 = "61-90"
    OVER_90 = "over-90"
