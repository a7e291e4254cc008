"""The `costs-report` command: the AWS costs page's figures as text or CSV, exact decimals."""

from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlmodel import Session

from billing_core import money
from billing_core.config import Settings
from billing_core.costs.refresh import last_failure
from billing_core.costs.snapshots import ZERO, CostSource, ReportBy
from billing_core.csv_cells import cell_text
from billing_core.errors import CostSourceError
from billing_core.file_names import export_file_name
from billing_core.periods import Period
from billing_core.views.aws_costs import CostsView, build_costs_view

log = logging.getLogger(__name__)


@dataclass
class ReportRow:
    key: str
    amount: Decimal


def report_rows(view: CostsView, by: ReportBy) -> list[ReportRow]:
    """The breakdown the page shows, as rows for `costs-report` (sums equal `view.total`)."""
    if by == "customer":
        return [
            ReportRow(str(n), a)
            for n, a in zip(view.by_customer["customer"], view.by_customer["amount"], strict=True)
        ]
    if by == "service":
        return [
            ReportRow(str(s), a)
            for s, a in zip(view.by_service["service"], view.by_service["amount"], strict=True)
        ]
    sums: dict[date, Decimal] = defaultdict(lambda: ZERO)
    if not view.daily.empty:
        for day, amount in zip(view.daily["day"], view.daily["amount"], strict=True):
            sums[day] += amount
    return [ReportRow(d.isoformat(), a) for d, a in sorted(sums.items())]


def breakdown_file_name(view: CostsView, customer_name: str | None) -> str:
    """'aws-costs_2026-10_Acme-Analytics_Amazon-EC2.csv': the month, then the filters shown."""
    return export_file_name("aws-costs", str(view.period), customer_name, view.filters.service)


def breakdown_csv_bytes(view: CostsView) -> bytes:
    """The breakdown CSV as a download: UTF-8 with a byte-order mark, as every CSV here."""
    return breakdown_csv(view).encode("utf-8-sig")


def breakdown_csv(view: CostsView) -> str:
    """CSV of the breakdown shown: exact amounts (10 places) and the cost currency."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["period", "customer", "service", "record_type", "amount", "currency"])
    for row in view.breakdown.itertuples(index=False):
        writer.writerow(
            [
                str(view.period),
                cell_text(str(row.customer)),
                cell_text(str(row.service)),
                row.record_type,
                str(row.amount),
                view.currency,
            ]
        )
    return out.getvalue()


def describe_age(age: timedelta) -> str:
    """'3 min', '5 h 10 min', '2 days' (for 'last refreshed' notes)."""
    minutes = max(0, int(age.total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        hours, rest = divmod(minutes, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{minutes // (24 * 60)} days"


def format_report(
    session: Session,
    settings: Settings,
    period: Period,
    by: ReportBy,
    *,
    now: datetime,
    as_csv: bool = False,
) -> str:
    """The page's figures as text (or CSV with exact amounts) for `costs-report`."""
    view = build_costs_view(session, settings, period)
    info = view.snapshot
    if info is None:
        source = CostSource.of(settings)
        raise CostSourceError(f"No cost snapshot: {source.missing(period)} first.")
    rows = report_rows(view, by)
    if as_csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([by, "amount", "currency", "estimated", "fetched_at"])
        for row in rows:
            writer.writerow(
                [
                    cell_text(row.key),
                    str(row.amount),
                    view.currency,
                    info.estimated,
                    info.fetched_at.isoformat(),
                ]
            )
        return out.getvalue()
    cur = view.currency

    def show(amount: Decimal) -> str:
        return money.display(money.round_minor(amount, cur), cur)

    scope = f"month to date, {info.covered_days} day(s)" if view.running else "whole month"
    lines = [
        f"AWS costs {period} ({info.metric}, {info.group_by}), {scope}"
        + (", ESTIMATED" if info.estimated else ""),
        f"snapshot {info.id} ({info.granularity}) fetched {info.fetched_at:%Y-%m-%d %H:%M} UTC, "
        f"{describe_age(info.age(now))} ago",
    ]
    failure = last_failure(session)
    if failure is not None:
        lines.append(
            f"note: the last refresh failed ({failure.at:%Y-%m-%d %H:%M} UTC): {failure.message}"
        )
    if by == "day" and view.daily_snapshot is None:
        lines.append("note: no daily figures stored for this month")
    width = max([len(r.key) for r in rows] + [24])
    lines += [f"{by:<{width}}  {'amount':>18}"]
    lines += [f"{r.key:<{width}}  {show(r.amount):>18}" for r in rows]
    lines.append(f"{'total':<{width}}  {show(view.total):>18}")
    for record_type, amount in sorted(view.adjustments.items()):
        lines.append(f"  of which {record_type.lower()}: {show(amount)}")
    share = view.unattributed_share
    lines.append(
        f"unattributed: {show(view.unattributed)}"
        + (f" ({share:.1f} % of the account)" if share is not None else "")
    )
    if view.shared_note:
        lines.append(view.shared_note)
    if view.running and view.compared_total is not None and view.previous_same_days is not None:
        days = f"first {view.compared_days} day{'' if view.compared_days == 1 else 's'}"
        lines.append(f"{period} {days}: {show(view.compared_total)}")
        lines.append(f"{view.previous_period} {days}: {show(view.previous_same_days)}")
    if view.previous_total is not None:
        lines.append(f"{view.previous_period} total: {show(view.previous_total)}")
    if view.change is not None:
        pct = f" ({view.change_pct:+.1f} %)" if view.change_pct is not None else ""
        change = money.display_change(money.round_minor(view.change, cur), cur)
        lines.append(f"change: {change}{pct}")
    elif view.running:
        lines.append(f"change: none yet; it compares {view.compared_what}")
    if view.forecast is not None:
        lines.append(f"forecast month end ({view.forecast_source}): {show(view.forecast)}")
    return "\n".join(lines) + "\n"
