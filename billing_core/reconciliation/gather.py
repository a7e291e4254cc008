"""Reconciliation input: local invoices and Stripe's invoices of a period as comparable records.

Stripe window: invoices are created after their month ends, so the run lists invoices created
from the period start to 45 days after its end (about one request per 100 invoices) and keeps
those whose metadata ``period`` is P; an invoice without that metadata (made outside this tool)
belongs to the month it was created in. Linked local invoices not found in the window are read
one by one (each one is an anomaly anyway)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from billing_core.models import (
    Customer,
    Invoice,
    InvoiceLine,
)
from billing_core.periods import Period
from billing_core.reconciliation.diffing import (
    InvoiceLineRecord,
    InvoiceRecord,
)
from billing_core.states import DisplayStatus, InvoiceOutcome, InvoiceStatus
from billing_core.stripe.gateway import ReconcileReader

log = logging.getLogger(__name__)


# How long after a period ends its invoices may still be created in Stripe.
STRIPE_WINDOW_AFTER = timedelta(days=45)


# Metadata keys our invoicing writes on Stripe invoices (the first one is the canonical one).
METADATA_LOCAL_ID_KEYS = ("local_invoice_id", "invoice_id")


METADATA_PERIOD_KEY = "period"


# Invoices that were issued to the customer (drafts and voids billed nothing).
BILLED_STATUSES = (
    DisplayStatus.OPEN,
    DisplayStatus.PAID,
    DisplayStatus.FAILED,
    DisplayStatus.UNCOLLECTIBLE,
)


DEMO_SCOPE = "demo/"


def stripe_window(period: Period) -> tuple[int, int]:
    """Unix seconds [gte, lt) of the `created` filter used to list a period's invoices."""
    return int(period.start_at.timestamp()), int((period.end_at + STRIPE_WINDOW_AFTER).timestamp())


def _metadata_local_id(metadata: Mapping[str, Any]) -> int | None:
    for key in METADATA_LOCAL_ID_KEYS:
        value = str(metadata.get(key) or "").strip()
        if value.isdigit():
            return int(value)
    return None


def stripe_period(obj: Mapping[str, Any]) -> str:
    """The period a Stripe invoice belongs to: its metadata, else the month it was created."""
    metadata = obj.get("metadata") or {}
    if metadata.get(METADATA_PERIOD_KEY):
        return str(metadata[METADATA_PERIOD_KEY])
    return str(Period.containing(datetime.fromtimestamp(int(obj.get("created") or 0), tz=UTC)))


def stripe_record(
    obj: Mapping[str, Any],
    customer_ids: Mapping[str, int],
    lines: Sequence[Mapping[str, Any]] | None = None,
) -> InvoiceRecord:
    """A Stripe invoice as an InvoiceRecord; `lines` when all were read separately."""
    customer = obj.get("customer")
    deleted = False
    if isinstance(customer, Mapping):
        deleted = bool(customer.get("deleted"))
        customer = customer.get("id")
    embedded = obj.get("lines") or {}
    if lines is None and not embedded.get("has_more"):
        lines = embedded.get("data") or []
    return InvoiceRecord(
        local_id=_metadata_local_id(obj.get("metadata") or {}),
        stripe_id=str(obj["id"]),
        stripe_customer=str(customer) if customer else None,
        currency=str(obj.get("currency") or "").upper(),
        total_minor=int(obj.get("total") or 0),
        status=str(obj.get("status") or ""),
        period=stripe_period(obj),
        customer_id=customer_ids.get(str(customer)) if customer else None,
        lines=None
        if lines is None
        else tuple(
            InvoiceLineRecord(str(li.get("description") or ""), int(li.get("amount") or 0))
            for li in lines
        ),
        customer_deleted=deleted,
    )


def stripe_status_of(invoice: Invoice) -> str:
    """A local invoice's status in Stripe's words (a failed charge leaves it open)."""
    if invoice.outcome == InvoiceOutcome.CREDIT_CARRIED:
        return invoice.display_status  # never sent to Stripe: compared under its local word
    return invoice.status


def local_record(
    invoice: Invoice,
    stripe_customer: str | None,
    lines: Iterable[InvoiceLine],
    stripe_id: str | None = None,
) -> InvoiceRecord:
    return InvoiceRecord(
        local_id=invoice.id,
        stripe_id=stripe_id or invoice.stripe_invoice_id,
        stripe_customer=stripe_customer,
        currency=invoice.currency.upper(),
        total_minor=invoice.total_minor,
        status=stripe_status_of(invoice),
        period=invoice.period,
        customer_id=invoice.customer_id,
        lines=tuple(InvoiceLineRecord(li.description, li.amount_minor) for li in lines),
    )


def _lines_by_invoice(
    session: Session, invoice_ids: Sequence[int], kind: str | None = None
) -> dict[int, list[InvoiceLine]]:
    out: dict[int, list[InvoiceLine]] = defaultdict(list)
    if not invoice_ids:
        return out
    query = (
        select(InvoiceLine)
        .where(col(InvoiceLine.invoice_id).in_(invoice_ids))
        .order_by(col(InvoiceLine.invoice_id), col(InvoiceLine.position))
    )
    if kind is not None:
        query = query.where(InvoiceLine.kind == kind)
    for line in session.exec(query).all():
        out[line.invoice_id].append(line)
    return out


@dataclass
class StripeSide:
    local: list[InvoiceRecord]
    remote: list[InvoiceRecord]


def _local_stripe_records(session: Session, period: Period) -> list[InvoiceRecord]:
    """Non-demo local invoices of the period (demo invoices are not Stripe objects)."""
    invoices = session.exec(
        select(Invoice).where(Invoice.period == str(period), col(Invoice.is_demo).is_(False))
    ).all()
    invoices = [
        i for i in invoices if not (i.status == InvoiceStatus.VOID and not i.stripe_invoice_id)
    ]
    stripe_customers = dict(session.exec(select(Customer.id, Customer.stripe_customer_id)).all())
    lines = _lines_by_invoice(session, [i.id for i in invoices if i.id is not None])
    return [
        local_record(inv, stripe_customers.get(inv.customer_id), lines.get(inv.id or 0, []))
        for inv in invoices
    ]


def _needs_all_lines(loc: InvoiceRecord | None, obj: Mapping[str, Any], deep: bool) -> bool:
    """Read the remaining lines only where they can explain something (or when asked to)."""
    embedded = obj.get("lines") or {}
    if not embedded.get("has_more"):
        return False
    if deep:
        return True
    if loc is None or loc.lines is None:
        return False
    if int(obj.get("total") or 0) != loc.total_minor:
        return True
    if int(embedded.get("total_count") or 0) != len(loc.lines):
        return True
    mine = [(li.description, li.amount_minor) for li in loc.lines]
    for li in embedded.get("data") or []:
        pair = (str(li.get("description") or ""), int(li.get("amount") or 0))
        if pair not in mine:
            return True  # a first-ten line differs although the totals agree
        mine.remove(pair)
    return False


def read_stripe_side(
    session: Session, period: Period, reader: ReconcileReader, *, deep_lines: bool = False
) -> StripeSide:
    """Local records and the period's Stripe invoices (raises PaymentProviderError)."""
    local = _local_stripe_records(session, period)
    customer_ids = {
        sid: cid
        for cid, sid in session.exec(select(Customer.id, Customer.stripe_customer_id)).all()
        if sid and cid is not None
    }
    by_stripe = {r.stripe_id: r for r in local if r.stripe_id}
    by_local = {r.local_id: r for r in local}
    gte, lt = stripe_window(period)
    remote: list[InvoiceRecord] = []
    seen: set[str] = set()
    for obj in reader.invoices(gte, lt):
        if stripe_period(obj) != str(period):
            continue
        seen.add(str(obj["id"]))
        loc = by_stripe.get(str(obj["id"])) or by_local.get(
            _metadata_local_id(obj.get("metadata") or {})
        )
        lines = (
            reader.invoice_lines(str(obj["id"])) if _needs_all_lines(loc, obj, deep_lines) else None
        )
        remote.append(stripe_record(obj, customer_ids, lines))
    for rec in local:
        if rec.stripe_id and rec.stripe_id not in seen:
            found = reader.invoice(rec.stripe_id)  # created outside the window, or gone
            if found is not None:
                obj = found
                lines = (
                    reader.invoice_lines(rec.stripe_id)
                    if _needs_all_lines(rec, obj, deep_lines)
                    else None
                )
                remote.append(stripe_record(obj, customer_ids, lines))
    return StripeSide(local, remote)
