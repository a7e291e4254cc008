"""The one definition of each invoice total: billed, paid, outstanding, refunded, credited.

Pure: no I/O. The invoices page's headline figures, the `export-invoices` summary and the
overview all add invoices through `Figures.add`, so the same selection gives the same figures
everywhere (and the CSV's columns sum to them). Amounts are integer minor units of one currency;
money is never summed across currencies.

- billed: the total of invoices issued to the customer: open, paid (refunded or not), failed,
  uncollectible. Not drafts (never issued), not void (cancelled), not credits carried forward
  (never sent: the credit is billed as a negative line on the next invoice, so counting it
  here would count it twice), not amounts below Stripe's minimum charge (`carried`: billed
  on the next invoice the same way).
- paid: what customers paid (Stripe's `amount_paid`), before refunds.
- outstanding: still due on open and failed invoices (`total - amount_paid`); uncollectible
  invoices are written off and counted apart.
- refunded: paid back (Stripe's `amount_refunded` of the paying charge).
- credited: the credits carried forward, as a positive amount (minus the negative totals of
  `credit` invoices).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from billing_core.states import DisplayStatus

# Invoices issued to the customer: their totals are "billed".
BILLED_STATUSES = (
    DisplayStatus.OPEN,
    DisplayStatus.PAID,
    DisplayStatus.PARTIALLY_REFUNDED,
    DisplayStatus.REFUNDED,
    DisplayStatus.FAILED,
    DisplayStatus.UNCOLLECTIBLE,
)
# Invoices still due: their unpaid remainder is "outstanding".
OUTSTANDING_STATUSES = (DisplayStatus.OPEN, DisplayStatus.FAILED)


@dataclass
class Figures:
    """One currency's figures for a selection of invoices (minor units of that currency)."""

    currency: str
    count: int = 0
    billed: int = 0
    paid: int = 0
    outstanding: int = 0
    refunded: int = 0
    credited: int = 0
    open: int = 0  # outstanding without a failed attempt
    failed: int = 0  # outstanding after a failed payment
    uncollectible: int = 0  # written off: total - paid
    void: int = 0  # total of voided invoices
    counts: dict[str, int] = field(default_factory=dict)  # shown status -> invoices

    def add(
        self,
        status: str,
        *,
        total: int,
        paid: int = 0,
        refunded: int = 0,
        count: int = 1,
    ) -> None:
        """Count `count` invoices of shown `status` whose amounts sum to total/paid/refunded."""
        shown = DisplayStatus(status)
        self.count += count
        self.counts[shown] = self.counts.get(shown, 0) + count
        self.paid += paid
        self.refunded += refunded
        if shown in BILLED_STATUSES:
            self.billed += total
        if shown in OUTSTANDING_STATUSES:
            self.outstanding += total - paid
        if shown == DisplayStatus.OPEN:
            self.open += total - paid
        elif shown == DisplayStatus.FAILED:
            self.failed += total - paid
        elif shown == DisplayStatus.UNCOLLECTIBLE:
            self.uncollectible += total - paid
        elif shown == DisplayStatus.VOID:
            self.void += total
        elif shown == DisplayStatus.CREDIT:
            self.credited -= total


def by_currency(figures: dict[str, Figures], currency: str) -> Figures:
    """The currency's Figures in `figures`, created empty on first use."""
    return figures.setdefault(currency, Figures(currency))
