"""Data for the Reconciliation page: frames and a trend chart (no streamlit here)."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from sqlmodel import Session, col, select

from billing_core.models import Customer, Invoice, ReconciliationDiff, ReconciliationRun
from billing_core.reconciliation import act
from billing_core.reconciliation.diffing import KINDS, money_text
from billing_core.reconciliation.runs import diffs, kind_label, latest_run
from billing_core.states import DiffStatus

STATUSES: tuple[str, ...] = (DiffStatus.OPEN, DiffStatus.RESOLVED, DiffStatus.GONE)


@dataclass(frozen=True)
class Headline:
    open_above: int
    within_tolerance: int
    resolved: int
    last_run: ReconciliationRun | None


def _all(session: Session, period: str | None) -> list[ReconciliationDiff]:
    query = select(ReconciliationDiff)
    if period:
        query = query.where(ReconciliationDiff.period == period)
    return list(session.exec(query).all())


def headline(session: Session, period: str | None) -> Headline:
    rows = _all(session, period)
    return Headline(
        open_above=sum(1 for d in rows if d.status == DiffStatus.OPEN and not d.within_tolerance),
        within_tolerance=sum(1 for d in rows if d.within_tolerance),
        resolved=sum(1 for d in rows if d.status == DiffStatus.RESOLVED),
        last_run=latest_run(session, period),
    )


def summary_frame(session: Session, period: str | None = None) -> pd.DataFrame:
    """Per period and kind: open above tolerance, within tolerance, resolved, gone."""
    records = [
        {
            "period": d.period,
            "kind": d.kind,
            "open": int(d.status == DiffStatus.OPEN and not d.within_tolerance),
            "within tolerance": int(d.within_tolerance),
            "resolved": int(d.status == DiffStatus.RESOLVED),
            "gone": int(d.status == DiffStatus.GONE),
        }
        for d in _all(session, period)
    ]
    columns = ["period", "kind", "open", "within tolerance", "resolved", "gone"]
    if not records:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(records).groupby(["period", "kind"], as_index=False).sum()
    order = {k: i for i, k in enumerate(KINDS)}
    frame["_o"] = frame["kind"].map(order)
    frame = frame.sort_values(["period", "_o"], ascending=[False, True]).drop(columns="_o")
    frame["kind"] = frame["kind"].map(kind_label)
    return frame[columns].reset_index(drop=True)


def trend_figure(session: Session) -> go.Figure:
    """Open diffs above tolerance per month, stacked by kind."""
    frame = summary_frame(session)
    frame = frame[frame["open"] > 0]
    fig = px.bar(
        frame,
        x="period",
        y="open",
        color="kind",
        category_orders={"kind": [kind_label(k) for k in KINDS]},
        labels={"open": "open diffs above tolerance", "period": "Month", "kind": "Kind"},
    )
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 30, "b": 40}, legend_title=None)
    fig.update_yaxes(title_text="Open differences (count)", tickformat=",d", rangemode="tozero")
    fig.update_xaxes(type="category", categoryorder="category ascending")
    return fig


_INVOICE = re.compile(r"^(?:[^/]*/)?invoice:(\d+)(?::line:(.*))?$")
_STRIPE = re.compile(r"^(?:[^/]*/)?stripe:(.+)$")
_CUSTOMER = re.compile(r"^customer:\d+:(service|metric):(.+)$")


def subject_text(subject: str, numbers: Mapping[int, str]) -> str:
    """What a diff is about, as finance names it: 'Invoice DEMO-2026-10-0001', 'Invoice
    DEMO-2026-10-0001, line AWS Lambda, October 2026', 'Stripe invoice in_123', 'AWS service
    Amazon S3', 'Usage of seats'; `numbers` maps invoice ids to their numbers (an invoice
    without one reads 'local invoice #12'). A key of another shape is shown as it is."""
    if match := _INVOICE.match(subject):
        invoice_id, line = int(match.group(1)), match.group(2)
        number = numbers.get(invoice_id)
        name = f"Invoice {number}" if number else f"Local invoice #{invoice_id}"
        return f"{name}, line {line}" if line else name
    if match := _STRIPE.match(subject):
        return f"Stripe invoice {match.group(1)}"
    if match := _CUSTOMER.match(subject):
        what, name = match.groups()
        return f"AWS service {name}" if what == "service" else f"Usage of {name}"
    return subject


def _invoice_numbers(session: Session, rows: Sequence[ReconciliationDiff]) -> dict[int, str]:
    ids = {d.invoice_id for d in rows if d.invoice_id is not None}
    for d in rows:  # a line diff's key names its invoice even where invoice_id is not set
        if match := _INVOICE.match(d.subject):
            ids.add(int(match.group(1)))
    found = session.exec(select(Invoice.id, Invoice.number).where(col(Invoice.id).in_(ids))).all()
    return {int(i): n for i, n in found if i is not None and n}


def diff_frame(
    session: Session,
    now: datetime,
    *,
    period: str | None = None,
    kinds: Sequence[str] | None = None,
    statuses: Sequence[str] | None = None,
    include_within_tolerance: bool = False,
) -> pd.DataFrame:
    """The diff table: local vs remote, delta, kind, age and status, newest month first."""
    rows = diffs(
        session,
        period=period,
        kinds=kinds,
        statuses=statuses,
        include_within_tolerance=include_within_tolerance,
    )
    names = _customer_names(session, rows)
    numbers = _invoice_numbers(session, rows)
    records = [
        {
            "id": d.id,
            "period": d.period,
            "kind": kind_label(d.kind),
            "customer": names.get(d.id or 0, ""),
            "subject": subject_text(d.subject, numbers),
            "key": d.subject,
            "local": d.local_value or "",
            "remote": d.remote_value or "",
            "delta": money_text(d.delta_minor, d.currency) if d.delta_minor else "",
            "status": d.status + (" (within tolerance)" if d.within_tolerance else ""),
            "age (days)": max(0, (now - d.first_seen_at).days),
            "resolution": (d.resolution or "")
            + (f": {d.resolution_note}" if d.resolution_note else ""),
        }
        for d in rows
    ]
    columns = [
        "id",
        "period",
        "kind",
        "customer",
        "subject",
        "key",
        "local",
        "remote",
        "delta",
        "status",
        "age (days)",
        "resolution",
    ]
    return pd.DataFrame(records, columns=columns)


def diff_label(d: ReconciliationDiff, customer: str | None) -> str:
    delta = f", {money_text(d.delta_minor, d.currency)}" if d.delta_minor else ""
    who = f" {customer}" if customer else ""
    return f"#{d.id} {d.period} {d.kind}{who}{delta}"


class OpenDiff(NamedTuple):
    """An open diff as the resolve form shows it; `version` goes back with the admin's action."""

    id: int
    label: str
    kind: str
    version: int
    delta_minor: int = 0


def resolvable(
    session: Session, period: str | None = None, ids: Collection[int] | None = None
) -> list[OpenDiff]:
    """Open diffs for the resolve form, oldest first; `ids`: only these (the rows the page
    shows), None: every open one."""
    query = select(ReconciliationDiff).where(ReconciliationDiff.status == DiffStatus.OPEN)
    if period:
        query = query.where(ReconciliationDiff.period == period)
    if ids is not None:
        query = query.where(col(ReconciliationDiff.id).in_(list(ids)))
    rows = session.exec(query.order_by(col(ReconciliationDiff.id))).all()
    names = _customer_names(session, rows)
    return [
        OpenDiff(d.id or 0, diff_label(d, names.get(d.id or 0)), d.kind, d.version, d.delta_minor)
        for d in rows
    ]


def _customer_names(session: Session, rows: Sequence[ReconciliationDiff]) -> dict[int, str]:
    """Diff id -> customer name: an invoice's diff names the customer as invoiced (its bill-to
    name), any other diff the customer as it is now."""
    names = dict(session.exec(select(Customer.id, Customer.name)).all())
    invoice_ids = {d.invoice_id for d in rows if d.invoice_id is not None}
    billed_to = dict(
        session.exec(
            select(Invoice.id, Invoice.customer_name).where(col(Invoice.id).in_(invoice_ids))
        ).all()
    )
    out: dict[int, str] = {}
    for d in rows:
        name = billed_to.get(d.invoice_id) if d.invoice_id is not None else None
        name = name or (names.get(d.customer_id) if d.customer_id is not None else None)
        if name:
            out[d.id or 0] = name
    return out


def diff_kind(session: Session, diff_id: int) -> str | None:
    diff = session.get(ReconciliationDiff, diff_id)
    return diff.kind if diff is not None else None


def actions_for(kind: str, delta_minor: int = 0) -> list[str]:
    """Resolutions offered for a diff (reconciliation.act decides; it refuses the others)."""
    return act.actions_for(kind, delta_minor)


def run_rows(runs: Sequence[ReconciliationRun]) -> pd.DataFrame:
    records = [
        {
            "run": r.id,
            "period": r.period,
            "status": r.status,
            "by": r.actor,
            "started": r.started_at,
            "Stripe requests": r.stripe_requests,
            "raised": sum(v.get("raised", 0) for v in (r.counts.get("kinds") or {}).values()),
            "within tolerance": sum(
                v.get("within_tolerance", 0) for v in (r.counts.get("kinds") or {}).values()
            ),
            "notes": "; ".join(r.counts.get("notes") or []) or (r.error or ""),
        }
        for r in runs
    ]
    return pd.DataFrame(records)
