"""Pure reconciliation: compare normalized records, apply the tolerance rule, name findings.

No I/O and no clock: `reconciliation.gather` and `reconciliation.findings` turn local rows,
Stripe invoices and cost figures into the plain records below; `reconciliation.runs` stores what
these functions return.

Sign convention everywhere: ``delta_minor = remote - local``, where "local" is what we billed
(our invoice rows) and "remote" is the other source of truth: Stripe for section (a), the
latest Cost Explorer figures for (b), the recorded usage for (c). A positive delta on (b) or
(c) is what the customer still owes; that is the amount a true-up schedules.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from billing_core.errors import MoneyError
from billing_core.money import display, normalize_currency
from billing_core.states import InvoiceStatus

# Section (a): local invoices vs Stripe invoices.
STRIPE_KINDS: tuple[str, ...] = (
    "missing_in_stripe",
    "missing_locally",
    "amount",
    "currency",
    "status",
    "customer",
    "line",
    "credit_notes",
)
# Section (b): invoiced AWS costs vs the latest Cost Explorer figures.
AWS_KINDS: tuple[str, ...] = ("aws_restatement",)
# Section (c): usage billed vs usage recorded.
USAGE_KINDS: tuple[str, ...] = ("usage",)
KINDS: tuple[str, ...] = STRIPE_KINDS + AWS_KINDS + USAGE_KINDS
# Kinds whose size is money, so the tolerance applies; the others are always raised.
MONEY_KINDS = frozenset({"amount", "line", "aws_restatement", "usage"})
# Kinds an admin may turn into a true-up line on the customer's next invoice.
TRUE_UP_KINDS = frozenset({"aws_restatement", "usage"})


@dataclass(frozen=True)
class Tolerance:
    """Differences up to max(pct % of the larger absolute amount, one minor unit) are noise.

    Exactly: ``|remote - local| <= max(pct / 100 * max(|local|, |remote|), 1)`` in minor units,
    computed in Decimal (never rounded), so the boundary is the same for every currency.
    """

    pct: Decimal = Decimal("0.5")

    def __post_init__(self) -> None:
        if not isinstance(self.pct, Decimal) or self.pct < 0 or not self.pct.is_finite():
            raise MoneyError(f"Tolerance {self.pct!r} is not a percentage >= 0 (e.g. 0.5).")

    def threshold(self, local_minor: int, remote_minor: int) -> Decimal:
        larger = max(abs(local_minor), abs(remote_minor))
        return max(self.pct / Decimal(100) * Decimal(larger), Decimal(1))

    def within(self, local_minor: int, remote_minor: int) -> bool:
        return Decimal(abs(remote_minor - local_minor)) <= self.threshold(local_minor, remote_minor)


@dataclass(frozen=True)
class Finding:
    """One difference, ready to be upserted by (period, kind, subject)."""

    kind: str
    subject: str
    local_value: str | None
    remote_value: str | None
    delta_minor: int = 0
    within_tolerance: bool = False
    currency: str | None = None
    customer_id: int | None = None
    invoice_id: int | None = None


# Records are named tuples, not dataclasses: a run holds 100,000 of them, which tuples of
# strings and numbers keep quick to build and out of the garbage collector's way (CPython
# stops tracking such tuples, so they are not walked again on every full collection).


class InvoiceLineRecord(NamedTuple):
    description: str
    amount_minor: int


class InvoiceRecord(NamedTuple):
    """One invoice, local or Stripe, in one shape; statuses use Stripe's vocabulary."""

    local_id: int | None
    stripe_id: str | None
    stripe_customer: str | None
    currency: str  # upper case as received; may be a code we do not know
    total_minor: int
    status: str
    period: str | None = None
    customer_id: int | None = None  # local customer id, when known
    # None: not every line is known (Stripe embeds only the first ten), so lines are skipped.
    lines: tuple[InvoiceLineRecord, ...] | None = None
    customer_deleted: bool = False
    # Taken back by issued credit notes (Stripe: pre- plus post-payment credit note amounts).
    credited_minor: int = 0


def money_text(minor: int, currency: str | None) -> str:
    """Display money, or say plainly that the currency is unknown (never raises)."""
    if not currency:
        return f"{minor} minor units"
    try:
        return display(minor, currency)
    except MoneyError:
        return f"{minor} minor units of unknown currency {currency}"


def known_currency(code: str | None) -> bool:
    try:
        normalize_currency(code or "")
    except MoneyError:
        return False
    return True


def money_finding(
    kind: str,
    subject: str,
    local_minor: int,
    remote_minor: int,
    currency: str,
    tolerance: Tolerance,
    *,
    customer_id: int | None = None,
    invoice_id: int | None = None,
    local_label: str = "",
    remote_label: str = "",
) -> Finding | None:
    """A money difference (None when equal), flagged when within the tolerance."""
    if local_minor == remote_minor:
        return None
    return Finding(
        kind=kind,
        subject=subject,
        local_value=f"{money_text(local_minor, currency)}{local_label}",
        remote_value=f"{money_text(remote_minor, currency)}{remote_label}",
        delta_minor=remote_minor - local_minor,
        within_tolerance=tolerance.within(local_minor, remote_minor),
        currency=currency,
        customer_id=customer_id,
        invoice_id=invoice_id,
    )


# ---------------------------------------------------------------- (a) local vs Stripe


def _describe(rec: InvoiceRecord) -> str:
    who = rec.stripe_customer or "no Stripe customer"
    where = rec.stripe_id or (f"local #{rec.local_id}" if rec.local_id else "?")
    return f"{where}: {money_text(rec.total_minor, rec.currency)}, {rec.status}, {who}"


def _line_sums(lines: Iterable[InvoiceLineRecord]) -> dict[str, int]:
    sums: dict[str, int] = defaultdict(int)
    for line in lines:
        sums[line.description] += line.amount_minor
    return sums


def compare_lines(
    local: InvoiceRecord, remote: InvoiceRecord, subject: str, tolerance: Tolerance
) -> list[Finding]:
    """Lines matched by description (amounts summed per description); skipped if unknown."""
    if local.lines is None or remote.lines is None:
        return []
    mine, theirs = _line_sums(local.lines), _line_sums(remote.lines)
    out: list[Finding] = []
    for description in sorted(set(mine) | set(theirs)):
        found = money_finding(
            "line",
            f"{subject}:line:{description}",
            mine.get(description, 0),
            theirs.get(description, 0),
            local.currency,
            tolerance,
            customer_id=local.customer_id,
            invoice_id=local.local_id,
            local_label="" if description in mine else " (no such line)",
            remote_label="" if description in theirs else " (no such line)",
        )
        if found:
            out.append(found)
    return out


def compare_pair(
    local: InvoiceRecord, remote: InvoiceRecord, tolerance: Tolerance
) -> list[Finding]:
    """Differences between a local invoice and the Stripe invoice it is linked to."""
    if (
        local.stripe_id is not None
        and local.status == remote.status
        and local.stripe_customer == remote.stripe_customer
        and not remote.customer_deleted
        and local.currency == remote.currency
        and local.total_minor == remote.total_minor
        and local.credited_minor == remote.credited_minor
        and (local.lines is None or remote.lines is None or local.lines == remote.lines)
    ):
        return []  # the usual case, decided without building anything (a run has 50,000)
    subject = f"invoice:{local.local_id}"
    ids: dict[str, Any] = {"customer_id": local.customer_id, "invoice_id": local.local_id}
    out: list[Finding] = []
    if local.stripe_id is None:
        # Linked only through metadata: the push crashed before the Stripe id was saved.
        out.append(
            Finding(
                "status",
                subject,
                f"{local.status} (not linked to Stripe)",
                f"{remote.status} ({remote.stripe_id})",
                currency=local.currency,
                **ids,
            )
        )
    elif local.status != remote.status:
        out.append(
            Finding("status", subject, local.status, remote.status, currency=local.currency, **ids)
        )
    if remote.customer_deleted or local.stripe_customer != remote.stripe_customer:
        suffix = " (deleted in Stripe)" if remote.customer_deleted else ""
        out.append(
            Finding(
                "customer",
                subject,
                local.stripe_customer or "no Stripe customer",
                f"{remote.stripe_customer or 'no customer'}{suffix}",
                currency=local.currency,
                **ids,
            )
        )
    if local.currency != remote.currency:
        out.append(
            Finding(
                "currency",
                subject,
                money_text(local.total_minor, local.currency),
                money_text(remote.total_minor, remote.currency),
                currency=local.currency,
                **ids,
            )
        )
        return out  # amounts in different currencies cannot be compared
    found = money_finding(
        "amount", subject, local.total_minor, remote.total_minor, local.currency, tolerance, **ids
    )
    if found:
        out.append(found)
    out.extend(compare_lines(local, remote, subject, tolerance))
    if local.credited_minor != remote.credited_minor:
        # Exact: a credit note is a document, not an estimate; any difference is raised.
        out.append(
            Finding(
                "credit_notes",
                subject,
                f"credit notes {money_text(local.credited_minor, local.currency)}",
                f"credit notes {money_text(remote.credited_minor, remote.currency)}",
                delta_minor=remote.credited_minor - local.credited_minor,
                currency=local.currency,
                **ids,
            )
        )
    return out


def compare_invoices(
    local: Sequence[InvoiceRecord], remote: Sequence[InvoiceRecord], tolerance: Tolerance
) -> list[Finding]:
    """Match by Stripe id, then by the local id in Stripe metadata; report every difference."""
    by_stripe = {r.stripe_id: r for r in remote if r.stripe_id}
    by_local: dict[int, list[InvoiceRecord]] = defaultdict(list)
    for r in remote:
        if r.local_id is not None:
            by_local[r.local_id].append(r)
    paired: set[str] = set()
    linked: dict[int, str] = {}
    out: list[Finding] = []
    for loc in local:
        match = by_stripe.get(loc.stripe_id) if loc.stripe_id else None
        if match is None and loc.stripe_id is None and loc.local_id is not None:
            match = next(
                (r for r in by_local.get(loc.local_id, []) if r.stripe_id not in paired), None
            )
        if match is None:
            out.append(
                Finding(
                    "missing_in_stripe",
                    f"invoice:{loc.local_id}",
                    _describe(loc),
                    f"no Stripe invoice {loc.stripe_id}"
                    if loc.stripe_id
                    else "never pushed to Stripe",
                    delta_minor=-loc.total_minor,
                    currency=loc.currency,
                    customer_id=loc.customer_id,
                    invoice_id=loc.local_id,
                )
            )
            continue
        paired.add(match.stripe_id or "")
        if loc.local_id is not None:
            linked[loc.local_id] = match.stripe_id or ""
        out.extend(compare_pair(loc, match, tolerance))
    for r in remote:
        if r.stripe_id in paired or r.status == InvoiceStatus.VOID:
            continue  # a void invoice nobody knows about bills nothing
        note = ""
        if r.local_id is not None and r.local_id in linked:
            note = f" (duplicate of local invoice #{r.local_id}, linked to {linked[r.local_id]})"
        elif r.customer_deleted:
            note = " (customer deleted in Stripe)"
        out.append(
            Finding(
                "missing_locally",
                f"stripe:{r.stripe_id}",
                "no local invoice",
                _describe(r) + note,
                delta_minor=r.total_minor,
                currency=r.currency,
                customer_id=r.customer_id,
            )
        )
    return out


# ---------------------------------------------------------------- (b) AWS restatements


@dataclass(frozen=True)
class BilledInvoice:
    """What sections (b) and (c) need to know about one billed local invoice."""

    invoice_id: int
    customer_id: int
    currency: str


def compare_aws(
    billed: Mapping[int, BilledInvoice],
    invoiced: Mapping[tuple[int, str], int],
    latest: Mapping[tuple[int, str], int],
    tolerance: Tolerance,
    period: str,
) -> list[Finding]:
    """Per customer and service: invoiced AWS amount vs the amount the latest figures give."""
    out: list[Finding] = []
    for cid, service in sorted(set(invoiced) | set(latest)):
        inv = billed.get(cid)
        if inv is None:
            continue  # no billed invoice: nothing was invoiced that could be restated
        local, remote = invoiced.get((cid, service), 0), latest.get((cid, service), 0)
        found = money_finding(
            "aws_restatement",
            f"customer:{cid}:service:{service}",
            local,
            remote,
            inv.currency,
            tolerance,
            customer_id=cid,
            invoice_id=inv.invoice_id,
        )
        if found:
            out.append(found)
    return out


# ---------------------------------------------------------------- (c) usage


@dataclass(frozen=True)
class UsageFigure:
    """Overage quantity and its amount in the invoice currency."""

    quantity: Decimal
    amount_minor: int


def compare_usage(
    billed: Mapping[int, BilledInvoice],
    charged: Mapping[tuple[int, str], UsageFigure],
    recorded: Mapping[tuple[int, str], UsageFigure],
    tolerance: Tolerance,
) -> list[Finding]:
    """Per customer and metric: overage billed vs overage the recorded usage implies."""
    out: list[Finding] = []
    zero = UsageFigure(Decimal(0), 0)
    for cid, metric in sorted(set(charged) | set(recorded)):
        inv = billed.get(cid)
        if inv is None:
            continue
        local, remote = charged.get((cid, metric), zero), recorded.get((cid, metric), zero)
        if local.amount_minor == remote.amount_minor and local.quantity == remote.quantity:
            continue
        delta = remote.amount_minor - local.amount_minor
        out.append(
            Finding(
                "usage",
                f"customer:{cid}:metric:{metric}",
                f"{_qty(local.quantity)} {metric} over plan billed: "
                f"{money_text(local.amount_minor, inv.currency)}",
                f"{_qty(remote.quantity)} {metric} over plan recorded: "
                f"{money_text(remote.amount_minor, inv.currency)}",
                delta_minor=delta,
                within_tolerance=tolerance.within(local.amount_minor, remote.amount_minor),
                currency=inv.currency,
                customer_id=cid,
                invoice_id=inv.invoice_id,
            )
        )
    return out


def _qty(value: Decimal) -> str:
    text = f"{value.normalize():,f}"
    return text


def tally(findings: Iterable[Finding]) -> dict[str, dict[str, int]]:
    """Per kind: how many were raised and how many stayed within the tolerance."""
    counts: dict[str, dict[str, int]] = {}
    for f in findings:
        row = counts.setdefault(f.kind, {"raised": 0, "within_tolerance": 0})
        row["within_tolerance" if f.within_tolerance else "raised"] += 1
    return counts
