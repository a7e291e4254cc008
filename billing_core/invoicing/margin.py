"""Gross margin: what we billed against what AWS charged us, per currency, exact.

`margin_facts` reads one range of months and returns the smallest pieces (currency, month,
customer, service); `group_margin` adds them up by month, customer or service. The Overview
page, the Customer page and `margin-report` all read these two functions, so they agree.

Definitions (every figure per invoice currency; money is never summed across currencies):

- **Revenue** is the total of the invoices billed for the month, as `invoicing.figures`
  defines billed (`BILLED_STATUSES`: open, paid, refunded, failed, uncollectible; not drafts,
  voids, credits or amounts carried forward). It is split by invoice line kind
  (`states.LineKind`): base fees, AWS resale (with markup), usage overage, and adjustments
  (true-ups and credits carried in from earlier months, plus any part of an invoice total that
  is on no line: none today, as totals are the sum of their lines), less the credit notes
  issued on those invoices (a negative part of the month the invoice bills). Integer minor
  units.
- **AWS cost** is what AWS charged for the customer's month *at cost*, before markup: the
  customer's attributed cost (`costs.attribution.attributed_costs`) in the month's latest
  complete snapshot of the configured metric and grouping, i.e. the figures `costs-report`
  prints. The latest figures, not those the invoice was priced from: when AWS restated a
  month after it was invoiced, the margin shows what the month really cost (reconciliation
  bills the difference as a true-up on a later invoice); a note names such months.
  AWS cost is in USD; it is converted to the invoice currency with **the invoice's own**
  `fx_rate` (the rate its AWS lines were priced at), so each margin is in one invoice
  currency. Exact Decimal, never rounded here.
- **Gross margin** = revenue - AWS cost (exact Decimal, invoice currency), and the percent of
  revenue (None when revenue is zero).

Cost that is on no billed invoice is counted apart, in USD: spend of customers whose month is
not billed (not invoiced yet, draft, void, credit carried) and unattributed spend. Per month:
billed customers' cost + not billed + unattributed = the snapshot's total, to the last digit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from sqlalchemy import ColumnElement, String, case, false, literal_column, type_coerce
from sqlalchemy import select as sa_select
from sqlalchemy.sql.visitors import replacement_traverse
from sqlmodel import Session, col, func

from billing_core.costs.attribution import Attribution, attributed_costs
from billing_core.costs.snapshots import CostSource, SnapshotInfo
from billing_core.exchange_rates.convert import COST_CURRENCY
from billing_core.exchange_rates.rates import load_rates
from billing_core.invoicing.figures import BILLED_STATUSES
from billing_core.models import CreditNote, Customer, Invoice, InvoiceLine, display_status_in
from billing_core.money import minor_to_decimal
from billing_core.periods import Period
from billing_core.states import CreditNoteStatus, LineKind

ZERO = Decimal(0)
HUNDRED = Decimal(100)

MarginBy = Literal["month", "customer", "service"]

#: The customer of a fact summed over every customer of its month (`margin_facts`'
#: `customers_in`); customer ids start at 1.
ALL_CUSTOMERS = 0

# Revenue buckets, in the order reports show them.
BASE_FEES = "base_fees"
AWS_RESALE = "aws_resale"
USAGE_OVERAGE = "usage_overage"
ADJUSTMENTS = "adjustments"
CREDIT_NOTES = "credit_notes"
REVENUE_PARTS = (BASE_FEES, AWS_RESALE, USAGE_OVERAGE, ADJUSTMENTS, CREDIT_NOTES)
PART_LABELS = {
    BASE_FEES: "Base fees",
    AWS_RESALE: "AWS resale",
    USAGE_OVERAGE: "Usage overage",
    ADJUSTMENTS: "Adjustments",
    CREDIT_NOTES: "Credit notes",
}
_KIND_PART = {
    LineKind.BASE_FEE: BASE_FEES,
    LineKind.AWS: AWS_RESALE,
    LineKind.SHARED_COST: AWS_RESALE,
    LineKind.OVERAGE: USAGE_OVERAGE,
    LineKind.TRUE_UP: ADJUSTMENTS,
    LineKind.CREDIT: ADJUSTMENTS,
}


# By plain string too: `part_of` runs once per summed line row (tens of thousands per Overview).
_PART_BY_VALUE = {str(kind): part for kind, part in _KIND_PART.items()}


def part_of(kind: str) -> str:
    """The revenue bucket of an invoice line kind (an unknown kind counts as an adjustment)."""
    return _PART_BY_VALUE.get(str(kind), ADJUSTMENTS)


@dataclass
class Margin:
    """Revenue, AWS cost and gross margin of some invoices in one currency.

    Revenue parts are integer minor units of `currency`; `cost_usd` is USD at cost (exact, as
    Cost Explorer reports it); `cost` is the same cost in `currency` at each invoice's rate.
    """

    currency: str
    key: str = ""  # what a row is shown as: the month, customer name or service
    ref: str = ""  # what it stands for: the month, customer id or service
    invoices: int = 0
    revenue_parts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REVENUE_PARTS, 0))
    cost_usd: Decimal = ZERO
    cost: Decimal = ZERO

    @property
    def revenue_minor(self) -> int:
        """Billed revenue in minor units: the invoices' totals."""
        return sum(self.revenue_parts.values())

    @property
    def revenue(self) -> Decimal:
        """Billed revenue in major units of `currency` (exact)."""
        return minor_to_decimal(self.revenue_minor, self.currency)

    @property
    def margin(self) -> Decimal:
        """Gross margin in major units of `currency`, exact: revenue - AWS cost."""
        return self.revenue - self.cost

    @property
    def margin_pct(self) -> Decimal | None:
        """Gross margin as a percentage of revenue (exact quotient); None without revenue."""
        if self.revenue_minor == 0:
            return None
        return self.margin / self.revenue * HUNDRED

    def absorb(self, other: Margin) -> None:
        """Add `other` (same currency) into this one."""
        if other.currency != self.currency:
            raise ValueError(f"cannot add {other.currency} margin to {self.currency}")
        self.invoices += other.invoices
        for part, amount in other.revenue_parts.items():
            self.revenue_parts[part] = self.revenue_parts.get(part, 0) + amount
        self.cost_usd += other.cost_usd
        self.cost += other.cost


class Fact(NamedTuple):
    """The smallest piece: one currency, month, customer and service (None: not AWS, or
    services not asked for)."""

    currency: str
    period: str
    customer_id: int
    service: str | None


@dataclass
class MonthCosts:
    """One month's AWS cost in USD and where it went (billed + not billed + unattributed =
    total, exactly). `snapshot` is None when the month has no snapshot of the source."""

    period: Period
    snapshot: SnapshotInfo | None = None
    total_usd: Decimal = ZERO
    billed_usd: dict[str, Decimal] = field(default_factory=dict)  # invoice currency -> USD
    not_billed_usd: Decimal = ZERO
    unattributed_usd: Decimal = ZERO
    # Every customer's cost (billed or not), USD at cost: what the costs page shows.
    customer_usd: dict[int, Decimal] = field(default_factory=dict)
    # Billed invoices priced from another snapshot than `snapshot` (AWS restated the month).
    priced_from_older: int = 0

    @property
    def attributed_usd(self) -> Decimal:
        """Customers' cost, billed or not (what the costs page shows per customer)."""
        return sum(self.billed_usd.values(), ZERO) + self.not_billed_usd


@dataclass
class MarginFacts:
    """Everything the margin figures of a range of months are added up from."""

    periods: list[Period]
    source: CostSource
    facts: dict[Fact, Margin] = field(default_factory=dict)
    months: dict[str, MonthCosts] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def currencies(self) -> list[str]:
        return sorted({f.currency for f in self.facts})

    def _piece(self, fact: Fact) -> Margin:
        piece = self.facts.get(fact)
        if piece is None:
            piece = self.facts[fact] = Margin(fact.currency)
        return piece


class _Billed(NamedTuple):
    """A billed invoice as the margin needs it (a tuple: built once per invoice of 13 months,
    quicker than a frozen dataclass)."""

    customer_id: int
    period: str
    currency: str
    total_minor: int
    fx_rate: Decimal | None
    cost_snapshot_id: int | None


def months_between(first: Period, last: Period) -> list[Period]:
    """Every month from `first` to `last`, inclusive (empty when `last` is before `first`)."""
    out: list[Period] = []
    month = first
    while month <= last:
        out.append(month)
        month = month.next()
    return out


def margin_facts(
    session: Session,
    periods: Iterable[Period],
    source: CostSource,
    *,
    customer_ids: Iterable[int] | None = None,
    services: bool = True,
    customers_in: Iterable[Period] | None = None,
) -> MarginFacts:
    """Revenue and AWS cost of `periods` (and only `customer_ids` if given), by currency,
    month, customer and service (`services=False`: not split by service, which is quicker
    when only months and customers are added up). Reads the database only (invoices, lines,
    cost snapshots).

    `customers_in`: the months split by customer (default: all). The other months' facts are
    summed over their customers into one fact per currency (and service) with customer_id
    `ALL_CUSTOMERS`: the same month totals, to the last digit, from a few rows instead of one
    per customer (the Overview charts 13 months but lists the customers of two).
    `MonthCosts.customer_usd` stays per customer for every month."""
    wanted = sorted(set(periods))
    out = MarginFacts(periods=wanted, source=source)
    if not wanted:
        return out
    only = None if customer_ids is None else set(customer_ids)
    low, high = str(wanted[0]), str(wanted[-1])
    keep = {str(p) for p in wanted}
    split = keep if customers_in is None else {str(p) for p in customers_in} & keep
    out.names = {
        int(cid): name
        for cid, name in session.execute(sa_select(col(Customer.id), col(Customer.name)))
    }
    billed = _billed_invoices(session, low, high, keep, only)
    # Lines and invoice totals of a month not split by customer are summed under one key: a
    # total not on its lines shows the same in the sum (sum of totals - sum of lines).
    lines_total: dict[tuple[str, str, int], int] = defaultdict(int)
    for period, cid, currency, kind, service, amount in _billed_lines(
        session, low, high, only, services, None if customers_in is None else split
    ):
        if period not in keep:
            continue
        part = part_of(kind)
        is_aws = part == AWS_RESALE
        piece = out._piece(Fact(currency, period, cid, service if is_aws and services else None))
        piece.revenue_parts[part] += amount
        lines_total[(currency, period, cid)] += amount
    totals: dict[tuple[str, str, int], list[int]] = {}
    for inv in billed.values():
        cid = inv.customer_id if inv.period in split else ALL_CUSTOMERS
        count_total = totals.setdefault((inv.currency, inv.period, cid), [0, 0])
        count_total[0] += 1
        count_total[1] += inv.total_minor
    for (currency, period, cid), (count, total) in totals.items():
        piece = out._piece(Fact(currency, period, cid, None))
        piece.invoices += count
        # A total not on any line (none today) still counts, as an adjustment.
        piece.revenue_parts[ADJUSTMENTS] += total - lines_total[(currency, period, cid)]
    for period, cid, currency, credited in _credit_notes(session, low, high, only):
        if (period, cid) in billed and period in keep:
            fact = Fact(currency, period, cid if period in split else ALL_CUSTOMERS, None)
            out._piece(fact).revenue_parts[CREDIT_NOTES] -= credited
    owners = Attribution.load_many(session, wanted)  # customers' terms read once, not monthly
    for month in wanted:
        _add_costs(session, out, month, billed, only, services, owners[month], str(month) in split)
    return out


def _credit_notes(
    session: Session, low: str, high: str, only: set[int] | None
) -> list[tuple[str, int, str, int]]:
    """(period, customer, currency, credited minor units) of the credit notes issued on billed
    invoices of the months (corrections/credit_notes.py), summed in SQL.

    Read credit notes first (there are few), then their invoices by id: joined in one query,
    SQLite walks every billed invoice of every month through the status index instead."""
    issued = (
        sa_select(
            col(CreditNote.invoice_id),
            col(CreditNote.currency),
            func.sum(col(CreditNote.amount_minor)),
        )
        .where(col(CreditNote.status) == CreditNoteStatus.ISSUED)
        .group_by(col(CreditNote.invoice_id), col(CreditNote.currency))
    )
    credited: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for invoice_id, currency, amount in session.execute(issued):
        credited[int(invoice_id)].append((currency, int(amount or 0)))
    sums: dict[tuple[str, int, str], int] = defaultdict(int)
    ids = sorted(credited)
    for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
        query = sa_select(col(Invoice.id), col(Invoice.period), col(Invoice.customer_id)).where(
            col(Invoice.id).in_(chunk),
            col(Invoice.period) >= low,
            col(Invoice.period) <= high,
            display_status_in(BILLED_STATUSES),
        )
        if only is not None:
            query = query.where(col(Invoice.customer_id).in_(only))
        for invoice_id, period, cid in session.execute(query):
            for currency, amount in credited[int(invoice_id)]:
                sums[(period, int(cid), currency)] += amount
    return [(p, c, cur, a) for (p, c, cur), a in sums.items()]


def _billed_in_range() -> ColumnElement[bool]:
    """SQL: the invoice is billed (`display_status_in(BILLED_STATUSES)`), with its status and
    outcome compared as `column || ''` (same values; NULL stays NULL) so that their indexes
    stay out of the plan: the queries here are narrowed by a range of months, which SQLite's
    planner, without statistics, would otherwise leave for the status index and read every
    paid invoice of every month (50 months instead of 13 at 1,000 customers: twice as long)."""
    table = Invoice.__table__  # type: ignore[attr-defined]

    def unindexed(element: Any, **_kw: Any) -> Any:
        if getattr(element, "table", None) is table and element.key in ("status", "outcome"):
            return type_coerce(element, String) + literal_column("''")
        return None

    return replacement_traverse(display_status_in(BILLED_STATUSES), {}, unindexed)


#: The same clause for other readers narrowed by months (the Overview's newest billed month).
billed_in_range = _billed_in_range


def _billed_invoices(
    session: Session, low: str, high: str, keep: set[str], only: set[int] | None
) -> dict[tuple[str, int], _Billed]:
    query = sa_select(
        col(Invoice.customer_id),
        col(Invoice.period),
        col(Invoice.currency),
        col(Invoice.total_minor),
        col(Invoice.fx_rate),
        col(Invoice.cost_snapshot_id),
    ).where(
        col(Invoice.period) >= low,
        col(Invoice.period) <= high,
        _billed_in_range(),
    )
    if only is not None:
        query = query.where(col(Invoice.customer_id).in_(only))
    out: dict[tuple[str, int], _Billed] = {}
    for cid, period, currency, total, fx_rate, snapshot_id in session.execute(query):
        if period in keep:  # one invoice per customer and month (a unique key)
            out[(period, int(cid))] = _Billed(
                int(cid), period, currency, int(total), fx_rate, snapshot_id
            )
    return out


def _billed_lines(
    session: Session,
    low: str,
    high: str,
    only: set[int] | None,
    services: bool,
    split: set[str] | None = None,
) -> list[tuple[str, int, str, str, str | None, int]]:
    """(period, customer, currency, kind, service, amount) of billed invoices' lines, summed
    in SQL (service None for every line unless `services`). Customer `ALL_CUSTOMERS` for
    every line of a month not in `split` (None: every month split by customer)."""
    service: Any = col(InvoiceLine.service) if services else literal_column("NULL")
    customer: Any = col(Invoice.customer_id)
    if split is not None:
        # The months as SQL text, not bound parameters: the expression is grouped by, and
        # PostgreSQL matches a GROUP BY expression to the selected one only when both render
        # the same. Safe as text: each is a `Period`'s own "YYYY-MM".
        months: list[Any] = [literal_column(f"'{Period.parse(p)}'") for p in sorted(split)]
        customer = case(
            (col(Invoice.period).in_(months) if months else false(), customer),
            else_=literal_column(str(ALL_CUSTOMERS)),
        )
    keys: list[Any] = [
        col(Invoice.period),
        customer,
        col(Invoice.currency),
        # As its plain string: no enum member built per row (part_of reads strings).
        type_coerce(col(InvoiceLine.kind), String),
    ]
    query = (
        sa_select(*keys, service, func.sum(col(InvoiceLine.amount_minor)))
        .join(Invoice, col(Invoice.id) == col(InvoiceLine.invoice_id))
        .where(
            col(Invoice.period) >= low,
            col(Invoice.period) <= high,
            _billed_in_range(),
        )
        .group_by(*keys, *([service] if services else []))
    )
    if only is not None:
        query = query.where(col(Invoice.customer_id).in_(only))
    return [
        (p, int(c), cur, str(k), s, int(a or 0)) for p, c, cur, k, s, a in session.execute(query)
    ]


def _add_costs(
    session: Session,
    out: MarginFacts,
    period: Period,
    billed: dict[tuple[str, int], _Billed],
    only: set[int] | None,
    services: bool,
    who: Attribution,
    by_customer: bool = True,
) -> None:
    costs = attributed_costs(
        session, period, out.source, who=who, customer_ids=only, by_service=services
    )
    month = MonthCosts(period=period, snapshot=costs.snapshot)
    key = str(period)  # once: this loop runs for every customer of every month
    out.months[key] = month
    if costs.snapshot is None:
        if any(billed_key[0] == key for billed_key in billed):
            out.notes.append(f"{period}: {out.source.missing(period)}; its AWS cost counts as 0.")
        return
    month.unattributed_usd = costs.unattributed_total
    month.total_usd = costs.total
    rates = None
    for cid in sorted(set(costs.usage) | set(costs.adjustments)):
        if only is not None and cid not in only:
            continue
        by_service: dict[str | None, Decimal] = dict(costs.usage.get(cid, {}).items())
        for record_type, amount in costs.adjustments.get(cid, {}).items():
            by_service[record_type] = by_service.get(record_type, ZERO) + amount
        usd = sum(by_service.values(), ZERO)
        month.customer_usd[cid] = usd
        inv = billed.get((key, cid))
        factor: Decimal | None = Decimal(1)
        if inv is not None and inv.currency != COST_CURRENCY:
            factor = inv.fx_rate
            if factor is None:  # older rows: the month's recorded rate, as the run used
                rates = rates or load_rates(session, period)
                factor = rates.usd_to.get(inv.currency)
        if inv is None or factor is None:
            month.not_billed_usd += usd
            if inv is not None:
                out.notes.append(
                    f"{period}: the {inv.currency} invoice of {out.names.get(cid, cid)} has no "
                    f"exchange rate: its AWS cost (USD {usd:f}) is left out of its margin."
                )
            continue
        if inv.cost_snapshot_id is not None and inv.cost_snapshot_id != costs.snapshot_id:
            month.priced_from_older += 1
        month.billed_usd[inv.currency] = month.billed_usd.get(inv.currency, ZERO) + usd
        if not services:
            by_service = {None: usd}
        fact_cid = cid if by_customer else ALL_CUSTOMERS
        for service, amount in by_service.items():
            piece = out._piece(Fact(inv.currency, key, fact_cid, service))
            piece.cost_usd += amount
            piece.cost += amount * factor
    if only is not None:  # a selection of customers: the month's total is theirs only
        month.total_usd = month.attributed_usd
        month.unattributed_usd = ZERO
    if month.priced_from_older:
        out.notes.append(
            f"{period}: {month.priced_from_older} invoice(s) were priced from an earlier cost "
            f"snapshot; AWS cost here is the latest one (snapshot {costs.snapshot_id}, fetched "
            f"{costs.snapshot.fetched_at:%Y-%m-%d %H:%M} UTC)."
        )


def group_margin(facts: MarginFacts, by: MarginBy) -> dict[str, list[Margin]]:
    """Currency -> one Margin per month, customer or service (`key`), in report order:
    months ascending, customers and services by revenue, largest first."""
    groups: dict[tuple[str, str], Margin] = {}
    for fact, piece in facts.facts.items():
        if by == "month":
            ref = key = fact.period
        elif by == "customer":
            ref = str(fact.customer_id)
            key = facts.names.get(fact.customer_id, f"customer {fact.customer_id}")
        else:
            ref = key = fact.service if fact.service is not None else "Other revenue"
        if (fact.currency, ref) not in groups:
            groups[(fact.currency, ref)] = Margin(fact.currency, key=key, ref=ref)
        groups[(fact.currency, ref)].absorb(piece)
    out: dict[str, list[Margin]] = defaultdict(list)
    for (currency, _key), margin in groups.items():
        out[currency].append(margin)
    for rows in out.values():
        if by == "month":
            rows.sort(key=lambda m: m.key)
        else:
            rows.sort(key=lambda m: (-m.revenue_minor, m.key))
    return dict(sorted(out.items()))


def by_service(facts: MarginFacts) -> dict[str, list[Margin]]:
    """Currency -> a Margin per AWS service (AWS resale against its cost), plus one row each
    for base fees, usage overage and adjustments (revenue without AWS cost)."""
    split = MarginFacts(facts.periods, facts.source, names=facts.names)
    for fact, piece in facts.facts.items():
        if fact.service is not None:
            split.facts[fact] = piece
            continue
        for part in REVENUE_PARTS:
            amount = piece.revenue_parts.get(part, 0)
            if amount == 0 and not (part == BASE_FEES and piece.invoices):
                continue
            label = PART_LABELS[part]
            target = split._piece(Fact(fact.currency, fact.period, fact.customer_id, label))
            target.revenue_parts[part] += amount
            if part == BASE_FEES:
                target.invoices += piece.invoices
    return group_margin(split, "service")


def totals(rows_by_currency: dict[str, list[Margin]]) -> dict[str, Margin]:
    """Currency -> the sum of its rows."""
    out: dict[str, Margin] = {}
    for currency, rows in rows_by_currency.items():
        total = Margin(currency, key="total")
        for row in rows:
            total.absorb(row)
        out[currency] = total
    return out


def grouped(facts: MarginFacts, by: MarginBy) -> dict[str, list[Margin]]:
    """`group_margin`, with the service view's non-AWS revenue split into its own rows."""
    return by_service(facts) if by == "service" else group_margin(facts, by)
