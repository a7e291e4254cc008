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
- outstanding: still due on open and failed invoices (`total - amount_paid` less what credit
  notes took off before payment, Stripe's `amount_remaining`); uncollectible invoices are
  written off and counted apart.
- refunded: paid back (Stripe's `amount_refunded` of the paying charge).
- credited: the credits carried forward, as a positive amount (minus the negative totals of
  `credit` invoices).
- credit notes: what credit notes took back from billed invoices (Stripe's pre- and
  post-payment credit note amounts); billed stays what the invoices said, so billed less credit
  notes is what the customers were finally charged.
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
    credit_notes: int = 0  # taken back by credit notes, before and after payment
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
        credit_notes_before: int = 0,
        credit_notes_after: int = 0,
    ) -> None:
        """Count `count` invoices of shown `status` whose amounts sum to total/paid/refunded;
        `credit_notes_before`/`_after`: their credit notes before and after payment."""
        shown = DisplayStatus(status)
        self.count += count
        self.counts[shown] = self.counts.get(shown, 0) + count
        self.paid += paid
        self.refunded += refunded
        due = total - paid - credit_notes_before
        if shown in BILLED_STATUSES:
            self.billed += total
            self.credit_notes += credit_notes_before + credit_notes_after
        if shown in OUTSTANDING_STATUSES:
            self.outstanding += due
        if shown == DisplayStatus.OPEN:
            self.open += due
        elif shown == DisplayStatus.FAILED:
            self.failed += due
        elif shown == DisplayStatus.UNCOLLECTIBLE:
            self.uncollectible += due
        elif shown == DisplayStatus.VOID:
            self.void += total
        elif shown == DisplayStatus.CREDIT:
            self.credited -= total


def by_currency(figures: dict[str, Figures], currency: str) -> Figures:
    """The currency's Figures in `figures`, created empty on first use."""
    return figures.setdefault(currency, Figures(currency))
