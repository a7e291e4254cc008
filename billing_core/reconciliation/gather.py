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
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVarTuple

from sqlalchemy import CursorResult, Row, Select
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func

from billing_core.invoicing.figures import BILLED_STATUSES as FIGURES_BILLED
from billing_core.models import (
    CreditNote,
    Customer,
    Invoice,
    InvoiceLine,
)
from billing_core.periods import Period
from billing_core.reconciliation.diffing import (
    InvoiceLineRecord,
    InvoiceRecord,
)
from billing_core.states import CARRIED_OUTCOMES, CreditNoteStatus, InvoiceStatus, LineKind
from billing_core.stripe import invoices as stripe_invoices
from billing_core.stripe.gateway import Gateway
from billing_core.stripe.keys import install_id
from billing_core.stripe.mapping import (
    InvoiceFigures,
    StripeInvoice,
    invoice_figures,
    line_pairs,
)

log = logging.getLogger(__name__)


# How long after a period ends its invoices may still be created in Stripe.
STRIPE_WINDOW_AFTER = timedelta(days=45)


# Invoices that were issued to the customer (drafts and voids billed nothing): the one
# definition of billed, refunded invoices included.
BILLED_STATUSES = FIGURES_BILLED


DEMO_SCOPE = "demo/"


def stripe_window(period: Period) -> tuple[int, int]:
    """Unix seconds [gte, lt) of the `created` filter used to list a period's invoices."""
    return int(period.start_at.timestamp()), int((period.end_at + STRIPE_WINDOW_AFTER).timestamp())


def stripe_record(
    obj: Mapping[str, Any] | StripeInvoice | InvoiceFigures,
    customer_ids: Mapping[str, int],
    lines: Sequence[Mapping[str, Any]] | None = None,
) -> InvoiceRecord:
    """A Stripe invoice (its JSON, or as read already) as an InvoiceRecord; `lines` (Stripe's
    JSON) when all were read."""
    remote = obj if isinstance(obj, StripeInvoice | InvoiceFigures) else invoice_figures(obj)
    pairs: Sequence[tuple[str, int]] | None = remote.lines if remote.all_lines_embedded else None
    if lines is not None:
        pairs = line_pairs(lines)
    return InvoiceRecord(
        local_id=remote.metadata.local_invoice_id,
        stripe_id=remote.id,
        stripe_customer=remote.customer,
        currency=remote.currency,
        total_minor=remote.total,
        status=remote.status,
        period=remote.period,
        customer_id=customer_ids.get(remote.customer) if remote.customer else None,
        lines=None if pairs is None else tuple(map(InvoiceLineRecord._make, pairs)),
        customer_deleted=remote.customer_deleted,
        credited_minor=remote.pre_payment_credit_notes + remote.post_payment_credit_notes,
    )


def stripe_status_of(invoice: Invoice) -> str:
    """A local invoice's status in Stripe's words (a failed charge leaves it open)."""
    if invoice.outcome in CARRIED_OUTCOMES:
        return invoice.display_status  # never sent to Stripe: compared under its local word
    return invoice.status


def local_record(
    invoice: Invoice,
    stripe_customer: str | None,
    lines: Iterable[InvoiceLine],
    stripe_id: str | None = None,
    credited_minor: int = 0,
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
        credited_minor=credited_minor,
    )


_Ts = TypeVarTuple("_Ts")


def core_rows(session: Session, query: Select[*_Ts]) -> CursorResult[*_Ts]:
    """The rows of `query` read on the session's connection, the session's pending changes
    flushed first (as its own queries do): plain rows without the ORM's loading machinery,
    which costs more than the rows themselves for a month of 50,000 invoices."""
    session.flush()
    return session.connection().execute(query)


# An invoice line as `_lines_by_invoice` reads it (attributes: invoice_id, kind, description,
# service, metric, quantity, amount_minor).
LineRow = Row[int, LineKind, str, str | None, str | None, Decimal, int]


def _lines_by_invoice(
    session: Session, period: Period, kind: str | None = None
) -> dict[int, list[LineRow]]:
    """Invoice id -> its lines (rows with InvoiceLine's kind, description, service, metric,
    quantity and amount_minor as attributes, in position order), for every invoice of
    `period`, optionally of one kind.

    Selected by the invoices' period (a join), never by a list of ids: a month of 50,000
    invoices is more bound parameters than SQLite or PostgreSQL take in one statement. Plain
    rows, not ORM objects: building an object for every line was most of a large run's time.
    """
    out: dict[int, list[LineRow]] = defaultdict(list)
    query = (
        sa_select(
            col(InvoiceLine.invoice_id),
            col(InvoiceLine.kind),
            col(InvoiceLine.description),
            col(InvoiceLine.service),
            col(InvoiceLine.metric),
            col(InvoiceLine.quantity),
            col(InvoiceLine.amount_minor),
        )
        .join(Invoice, col(Invoice.id) == col(InvoiceLine.invoice_id))
        .where(col(Invoice.period) == str(period))
        .order_by(col(InvoiceLine.invoice_id), col(InvoiceLine.position))
    )
    if kind is not None:
        query = query.where(col(InvoiceLine.kind) == kind)
    for line in core_rows(session, query):
        out[line.invoice_id].append(line)
    return out


def _line_records_by_invoice(
    session: Session, period: Period
) -> dict[int, tuple[InvoiceLineRecord, ...]]:
    """Invoice id -> (description, amount) records of its lines in position order, for every
    invoice of `period` (selected by period, as `_lines_by_invoice`)."""
    grouped: dict[int, list[InvoiceLineRecord]] = defaultdict(list)
    query = (
        sa_select(
            col(InvoiceLine.invoice_id), col(InvoiceLine.description), col(InvoiceLine.amount_minor)
        )
        .join(Invoice, col(Invoice.id) == col(InvoiceLine.invoice_id))
        .where(col(Invoice.period) == str(period))
        .order_by(col(InvoiceLine.invoice_id), col(InvoiceLine.position))
    )
    for invoice_id, description, amount in core_rows(session, query):
        grouped[invoice_id].append(InvoiceLineRecord(description, amount))
    return {iid: tuple(lines) for iid, lines in grouped.items()}


@dataclass
class StripeSide:
    local: list[InvoiceRecord]
    remote: list[InvoiceRecord]


def _local_stripe_records(session: Session, period: Period) -> list[InvoiceRecord]:
    """Non-demo local invoices of the period (demo invoices are not Stripe objects), in id
    order, read as plain columns (local_record's fields), their lines and credit notes each
    in one query selected by period."""
    rows = core_rows(
        session,
        sa_select(
            col(Invoice.id),
            col(Invoice.stripe_invoice_id),
            col(Customer.stripe_customer_id),
            col(Invoice.currency),
            col(Invoice.total_minor),
            col(Invoice.status),
            col(Invoice.outcome),
            col(Invoice.customer_id),
        )
        .join(Customer, col(Customer.id) == col(Invoice.customer_id), isouter=True)
        .where(col(Invoice.period) == str(period), col(Invoice.is_demo).is_(False))
        .order_by(col(Invoice.id)),
    )
    lines = _line_records_by_invoice(session, period)
    credited = _credited_by_invoice(session, period)
    records: list[InvoiceRecord] = []
    month = str(period)
    for iid, stripe_id, stripe_customer, currency, total, status, outcome, cid in rows:
        # Never meant for Stripe: voided before a push, and amounts carried to the next month
        # (credits, and totals below Stripe's minimum charge).
        if (status == InvoiceStatus.VOID and not stripe_id) or outcome in CARRIED_OUTCOMES:
            continue
        records.append(
            InvoiceRecord(
                local_id=iid,
                stripe_id=stripe_id,
                stripe_customer=stripe_customer,
                currency=currency.upper(),
                total_minor=total,
                status=status,  # Stripe's word: carried outcomes were left out (stripe_status_of)
                period=month,
                customer_id=cid,
                lines=lines.get(iid or 0, ()),
                credited_minor=credited.get(iid or 0, 0),
            )
        )
    return records


def _credited_by_invoice(session: Session, period: Period) -> dict[int, int]:
    """Issued credit notes per invoice of `period`, as recorded locally (minor units)."""
    rows = core_rows(
        session,
        sa_select(col(CreditNote.invoice_id), func.sum(col(CreditNote.amount_minor)))
        .join(Invoice, col(Invoice.id) == col(CreditNote.invoice_id))
        .where(
            col(Invoice.period) == str(period),
            col(CreditNote.status) == CreditNoteStatus.ISSUED,
        )
        .group_by(col(CreditNote.invoice_id)),
    )
    return {int(iid): int(total or 0) for iid, total in rows}


def _needs_all_lines(loc: InvoiceRecord | None, remote: InvoiceFigures, deep: bool) -> bool:
    """Read the remaining lines only where they can explain something (or when asked to)."""
    if remote.all_lines_embedded:
        return False
    if deep:
        return True
    if loc is None or loc.lines is None:
        return False
    if remote.total != loc.total_minor:
        return True
    if len(loc.lines) <= len(remote.lines):
        return True  # Stripe has more lines than it embedded, we have no more than those
    mine = [(li.description, li.amount_minor) for li in loc.lines]
    for pair in remote.lines:
        if pair not in mine:
            return True  # a first-ten line differs although the totals agree
        mine.remove(pair)
    return False


def _record(
    gw: Gateway,
    loc: InvoiceRecord | None,
    obj: Mapping[str, Any],
    customer_ids: Mapping[str, int],
    deep_lines: bool,
    remote: InvoiceFigures | None = None,
) -> InvoiceRecord:
    """`obj` (read as `remote` when the caller did) as a record; lines read when needed."""
    remote = remote or invoice_figures(obj)
    lines = None
    if _needs_all_lines(loc, remote, deep_lines):
        embedded = list((obj.get("lines") or {}).get("data") or [])
        lines = stripe_invoices.invoice_lines(gw, remote.id, embedded)
    return stripe_record(remote, customer_ids, lines)


def read_stripe_side(
    session: Session, period: Period, reader: Gateway, *, deep_lines: bool = False
) -> StripeSide:
    """Local records and the period's Stripe invoices (raises PaymentProviderError).

    Invoices another database sharing the Stripe account made (metadata with another install
    id) are not this database's to reconcile and are left out.
    """
    local = _local_stripe_records(session, period)
    install = install_id(session)
    customer_ids = {
        sid: cid
        for cid, sid in core_rows(
            session, sa_select(col(Customer.id), col(Customer.stripe_customer_id))
        )
        if sid and cid is not None
    }
    by_stripe = {r.stripe_id: r for r in local if r.stripe_id}
    by_local = {r.local_id: r for r in local}
    gte, lt = stripe_window(period)
    remote: list[InvoiceRecord] = []
    seen: set[str] = set()
    wanted = str(period)
    for obj in stripe_invoices.invoices_created(reader, gte, lt):
        found = invoice_figures(obj)  # read once (each invoice of 50,000 counts)
        if found.period != wanted or not found.metadata.mine(install):
            continue
        seen.add(found.id)
        loc = by_stripe.get(found.id) or by_local.get(found.metadata.local_invoice_id)
        remote.append(_record(reader, loc, obj, customer_ids, deep_lines, found))
    for rec in local:
        if rec.stripe_id and rec.stripe_id not in seen:
            # Created outside the window, or gone from Stripe (then it is missing remotely).
            raw = stripe_invoices.invoice_or_none(reader, rec.stripe_id)
            if raw is not None:
                remote.append(_record(reader, rec, raw, customer_ids, deep_lines))
    return StripeSide(local, remote)
