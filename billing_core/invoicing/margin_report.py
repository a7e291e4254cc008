"""The `margin-report` command: gross margin per currency as text or CSV (exact decimals).

The figures are `invoicing.margin`'s, the same the Overview and Customer pages show. The text
ends with each month's AWS cost accounted for in USD: billed customers + not billed +
unattributed = the Cost Explorer total that `costs-report` prints for the month.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from sqlmodel import Session, col, func, select

from billing_core.costs.snapshots import CostSource
from billing_core.csv_cells import cell_text
from billing_core.errors import ConfigError
from billing_core.invoicing.figures import BILLED_STATUSES
from billing_core.invoicing.margin import (
    PART_LABELS,
    REVENUE_PARTS,
    Margin,
    MarginBy,
    MarginFacts,
    grouped,
    margin_facts,
    months_between,
    totals,
)
from billing_core.models import Invoice, display_status_in
from billing_core.money import display, exponent, format_minor, round_minor
from billing_core.periods import Period

CSV_COLUMNS = (
    "currency",
    "key",
    "invoices",
    *REVENUE_PARTS,
    "revenue",
    "aws_cost_usd",
    "aws_cost",
    "gross_margin",
    "gross_margin_pct",
)
# Longest range one report covers (ten years): a typo in --from must not read forever.
MAX_MONTHS = 120


def last_billed_period(session: Session, up_to: Period) -> Period:
    """The default month of a report: the newest month up to `up_to` (the last closed month)
    that has billed invoices, so a month not invoiced yet is not reported as all "not billed";
    `up_to` itself when nothing is billed yet."""
    newest = session.exec(
        select(func.max(col(Invoice.period))).where(
            col(Invoice.period) <= str(up_to), display_status_in(BILLED_STATUSES)
        )
    ).one()
    return Period.parse(newest) if newest else up_to


def report_periods(
    period: Period | None, period_from: Period | None, period_to: Period | None, *, last: Period
) -> list[Period]:
    """The months a report covers: `--period`, or `--from`/`--to` (each defaulting to the
    other, `--to` alone to itself), or else `last` (the last closed month).

    ConfigError with a sentence for both forms at once, a reversed or an over-long range."""
    if period is not None and (period_from or period_to):
        raise ConfigError("Use either --period or --from/--to, not both.")
    if period is not None:
        return [period]
    if period_from is None and period_to is None:
        return [last]
    low = period_from or period_to
    high = period_to or max(last, low or last)
    assert low is not None
    if high < low:
        raise ConfigError(f"--from {low} is after --to {high}: give the earlier month first.")
    months = months_between(low, high)
    if len(months) > MAX_MONTHS:
        raise ConfigError(
            f"{low} to {high} is {len(months)} months; a report covers at most {MAX_MONTHS}: "
            "split it into shorter ranges."
        )
    return months


def plain(value: Decimal, places: int = 2) -> str:
    """An exact decimal as plain text with at least `places` decimals (more when it has them;
    never rounded, never in exponent notation): '110.00', '-0.50', '99.0000000001'."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -places:
        value = value.quantize(Decimal(1).scaleb(-places))  # adds zeros only: exact
    return f"{value:f}"


def pct_text(value: Decimal | None, places: int = 2) -> str:
    return "" if value is None else f"{value:.{places}f}"


def _major(amount: Decimal, currency: str) -> str:
    return display(round_minor(amount, currency), currency)


def margin_csv(facts: MarginFacts, by: MarginBy) -> str:
    """One row per currency and month, customer or service; amounts exact (revenue parts with
    the currency's digits, AWS cost and margin at full precision)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [by if c == "key" else c for c in CSV_COLUMNS]
        + (["customer_id"] if by == "customer" else [])
    )
    for currency, rows in grouped(facts, by).items():
        for row in rows:
            writer.writerow(_csv_row(row, currency) + ([row.ref] if by == "customer" else []))
    return out.getvalue()


def _csv_row(row: Margin, currency: str) -> list[str]:
    return [
        currency,
        cell_text(row.key),  # never a spreadsheet formula, one row even with line breaks
        str(row.invoices),
        *(format_minor(row.revenue_parts[p], currency) for p in REVENUE_PARTS),
        format_minor(row.revenue_minor, currency),
        plain(row.cost_usd),
        plain(row.cost, exponent(currency)),
        plain(row.margin, exponent(currency)),
        pct_text(row.margin_pct, 4),
    ]


def margin_text(facts: MarginFacts, by: MarginBy) -> str:
    """The report as aligned text: a table per currency, then each month's AWS cost in USD."""
    periods = facts.periods
    span = str(periods[0]) if len(periods) == 1 else f"{periods[0]} to {periods[-1]}"
    lines = [
        f"Gross margin {span}, by {by}: billed revenue against AWS cost at cost (before "
        "markup, latest Cost Explorer figures), converted at each invoice's own exchange rate",
    ]
    groups = grouped(facts, by)
    if not groups:
        lines.append("no invoices billed in these months")
    for currency, rows in groups.items():
        header = [by, "invoices", *(PART_LABELS[p] for p in REVENUE_PARTS), "revenue"]
        # USD invoices need no second AWS cost column: at cost and converted are the same.
        in_usd = currency == "USD"
        header += ["AWS cost USD", *([] if in_usd else [f"AWS cost {currency}"])]
        header += ["gross margin", "margin %"]
        table = [header]
        for row in [*rows, totals({currency: rows})[currency]]:
            table.append(
                [
                    row.key,
                    str(row.invoices),
                    *(display(row.revenue_parts[p], currency) for p in REVENUE_PARTS),
                    display(row.revenue_minor, currency),
                    _major(row.cost_usd, "USD"),
                    *([] if in_usd else [_major(row.cost, currency)]),
                    _major(row.margin, currency),
                    pct_text(row.margin_pct),
                ]
            )
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        lines += ["", currency]
        for r in table:
            cells = [r[0].ljust(widths[0])] + [
                c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
            ]
            lines.append("  ".join(cells).rstrip())
    lines += ["", "AWS cost per month (USD): billed customers + not billed + unattributed = total"]
    for key in sorted(facts.months):
        month = facts.months[key]
        if month.snapshot is None:
            lines.append(f"{key}: no cost snapshot ({facts.source.missing(month.period)})")
            continue
        billed = " + ".join(
            f"{cur} invoices {_major(usd, 'USD')}" for cur, usd in sorted(month.billed_usd.items())
        )
        snap = month.snapshot
        not_billed = _major(month.not_billed_usd, "USD")
        lines.append(
            f"{key}: {billed + ' + ' if billed else ''}not billed {not_billed}"
            f" + unattributed {_major(month.unattributed_usd, 'USD')} = "
            f"{_major(month.total_usd, 'USD')} (snapshot {snap.id}, {snap.granularity}, fetched "
            f"{snap.fetched_at:%Y-%m-%d %H:%M} UTC{', estimated' if snap.estimated else ''})"
        )
    lines += [f"note: {n}" for n in facts.notes]
    return "\n".join(lines) + "\n"


def format_margin_report(
    session: Session,
    source: CostSource,
    periods: list[Period],
    by: MarginBy,
    *,
    as_csv: bool = False,
) -> str:
    """`margin-report`'s output for `periods` from the database only."""
    facts = margin_facts(session, periods, source)
    return margin_csv(facts, by) if as_csv else margin_text(facts, by)
