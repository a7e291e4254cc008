"""Reconciliation service (DESIGN.md section 8): gather, compare, store, resolve.

A run for period P compares
  (a) local invoices with Stripe invoices (skipped when Stripe is not configured),
  (b) invoiced AWS costs with the latest cost snapshot of P,
  (c) overage billed with usage recorded,
and upserts its findings into ReconciliationDiff by (period, kind, subject).

Rules worth knowing:
- Stripe is read first, before anything is written: if it fails, the run is stored as
  ``failed`` with the error and every earlier diff stays as it was.
- Stripe window: invoices are created after their month ends, so the run lists invoices
  created from the period start to 45 days after its end (about one request per 100 invoices)
  and keeps those whose metadata ``period`` is P; an invoice without that metadata (made
  outside this tool) belongs to the month it was created in. Linked local invoices not found
  in the window are read one by one (each one is an anomaly anyway).
- A diff seen before and not seen now becomes ``gone`` (the difference disappeared, e.g.
  fixed in Stripe); resolved diffs stay resolved unless their values change, which reopens
  them. A section that did not run (Stripe not configured, no cost snapshot) leaves its
  diffs untouched. Demo findings (subjects starting ``demo/``) are only touched by the demo.
- Differences within the tolerance are stored with ``within_tolerance`` set and counted, but
  are not "raised": the CLI exits 1 only for open diffs above the tolerance.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from billing_core import audit
from billing_core.auth import Identity, require
from billing_core.config import Settings
from billing_core.costs import attributed_costs
from billing_core.db import session_scope
from billing_core.errors import BillingError, PaymentProviderError, ValidationError
from billing_core.models import (
    Customer,
    Invoice,
    InvoiceLine,
    PlanMetric,
    ReconciliationDiff,
    ReconciliationRun,
    TrueUp,
)
from billing_core.money import round_minor
from billing_core.periods import Period, utcnow
from billing_core.plans import effective_plan
from billing_core.reconcile_diff import (
    AWS_KINDS,
    KINDS,
    STRIPE_KINDS,
    TRUE_UP_KINDS,
    USAGE_KINDS,
    BilledInvoice,
    Finding,
    InvoiceLineRecord,
    InvoiceRecord,
    Tolerance,
    UsageFigure,
    compare_aws,
    compare_invoices,
    compare_usage,
    expected_aws_minor,
    tally,
)
from billing_core.stripe_gateway import ReconcileReader, make_client
from billing_core.usage import overage_amount, overage_quantity, totals_by_metric

log = logging.getLogger(__name__)

# How long after a period ends its invoices may still be created in Stripe.
STRIPE_WINDOW_AFTER = timedelta(days=45)
# Metadata keys our invoicing writes on Stripe invoices (the first one is the canonical one).
METADATA_LOCAL_ID_KEYS = ("local_invoice_id", "invoice_id")
METADATA_PERIOD_KEY = "period"
# Invoices that were issued to the customer (drafts and voids billed nothing).
BILLED_STATUSES = ("open", "paid", "failed", "uncollectible")
DEMO_SCOPE = "demo/"


# ============================================================== adapters (swap at merge)
# These read the tables directly. The costs, pricing and invoicing modules will offer the
# same answers; the lead swaps them in at merge time.


def _latest_costs_by_customer_service(
    session: Session, period: Period
) -> dict[tuple[int, str], Decimal] | None:
    """USD cost per (customer id, service or record type) from the latest snapshot; None if none.

    Every record type counts (usage, credits, refunds, support fees), since a restatement is
    exactly AWS adding those later. Unattributed costs are left out: no customer was billed.
    """
    attributed = attributed_costs(session, period)
    if attributed.snapshot_id is None:
        return None
    out: dict[tuple[int, str], Decimal] = {}
    for table in (attributed.usage, attributed.adjustments):
        for cid, amounts in table.items():
            for key, amount in amounts.items():
                out[(cid, key)] = out.get((cid, key), Decimal(0)) + amount
    return out


# ============================================================== normalizing records


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
    """A local invoice's status in Stripe's words (local 'failed' = open with a failed charge)."""
    if invoice.status == "failed":
        return "open" if invoice.push_step in ("finalized", "paid", "sent") else "draft"
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


# ============================================================== (a) Stripe


@dataclass
class StripeSide:
    local: list[InvoiceRecord]
    remote: list[InvoiceRecord]


def _local_stripe_records(session: Session, period: Period) -> list[InvoiceRecord]:
    """Non-demo local invoices of the period (demo invoices are not Stripe objects)."""
    invoices = session.exec(
        select(Invoice).where(Invoice.period == str(period), col(Invoice.is_demo).is_(False))
    ).all()
    invoices = [i for i in invoices if not (i.status == "void" and not i.stripe_invoice_id)]
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


# ============================================================== (b) AWS and (c) usage


def billed_invoices(session: Session, period: Period) -> dict[int, Invoice]:
    """Issued invoices of the period by customer id (demo invoices included)."""
    invoices = session.exec(
        select(Invoice).where(
            Invoice.period == str(period), col(Invoice.status).in_(BILLED_STATUSES)
        )
    ).all()
    return {i.customer_id: i for i in invoices}


def _billed(invoices: Mapping[int, Invoice]) -> dict[int, BilledInvoice]:
    return {cid: BilledInvoice(inv.id or 0, cid, inv.currency) for cid, inv in invoices.items()}


def aws_findings(
    session: Session, period: Period, tolerance: Tolerance
) -> tuple[list[Finding], dict[str, Any]] | None:
    """Section (b); None when the period has no cost snapshot (the section is skipped)."""
    latest_usd = _latest_costs_by_customer_service(session, period)
    if latest_usd is None:
        return None
    invoices = billed_invoices(session, period)
    ids = [i.id for i in invoices.values() if i.id is not None]
    lines = _lines_by_invoice(session, ids, "aws")
    invoiced: dict[tuple[int, str], int] = defaultdict(int)
    for cid, inv in invoices.items():
        for line in lines.get(inv.id or 0, []):
            if line.kind == "aws":
                invoiced[(cid, line.service or line.description)] += line.amount_minor
    latest: dict[tuple[int, str], int] = {}
    skipped: list[str] = []
    customers = {c.id: c for c in session.exec(select(Customer)).all()}
    for cid, inv in invoices.items():
        customer = customers[cid]
        plan = effective_plan(session, customer, period)
        rate = inv.fx_rate if inv.currency.upper() != inv.cost_currency.upper() else Decimal(1)
        if plan is None or rate is None:
            skipped.append(f"{customer.name}: no plan or exchange rate on the invoice")
            invoiced = defaultdict(int, {k: v for k, v in invoiced.items() if k[0] != cid})
            continue
        for (c, service), usd in latest_usd.items():
            if c == cid:
                latest[(cid, service)] = expected_aws_minor(
                    usd, plan.markup_pct, rate, inv.currency
                )
    findings = compare_aws(_billed(invoices), invoiced, latest, tolerance, str(period))
    return findings, {"skipped": skipped}


def usage_findings(session: Session, period: Period, tolerance: Tolerance) -> list[Finding]:
    """Section (c): overage lines on the invoices vs overage from the recorded usage."""
    invoices = billed_invoices(session, period)
    ids = [i.id for i in invoices.values() if i.id is not None]
    lines = _lines_by_invoice(session, ids, "overage")
    charged: dict[tuple[int, str], UsageFigure] = {}
    for cid, inv in invoices.items():
        for line in lines.get(inv.id or 0, []):
            if line.kind == "overage" and line.metric:
                prev = charged.get((cid, line.metric), UsageFigure(Decimal(0), 0))
                charged[(cid, line.metric)] = UsageFigure(
                    prev.quantity + line.quantity, prev.amount_minor + line.amount_minor
                )
    used = totals_by_metric(session, period)
    customers = {c.id: c for c in session.exec(select(Customer)).all()}
    recorded: dict[tuple[int, str], UsageFigure] = {}
    metrics_of: dict[int, list[PlanMetric]] = defaultdict(list)
    for m in session.exec(select(PlanMetric)).all():
        metrics_of[m.plan_id].append(m)
    for cid in sorted({c for c, _metric in used}):
        billed = invoices.get(cid)
        plan = effective_plan(session, customers[cid], period) if billed else None
        if billed is None or plan is None:
            continue  # nothing billed: usage of an unbilled month is not a billing difference
        for metric in metrics_of[plan.id or 0]:
            quantity = used.get((cid, metric.metric), Decimal(0))
            over = overage_quantity(quantity, metric.included_quantity)
            if over > 0:
                amount = overage_amount(
                    quantity, metric.included_quantity, metric.overage_unit_price
                )
                recorded[(cid, metric.metric)] = UsageFigure(
                    over, round_minor(amount, billed.currency)
                )
    return compare_usage(_billed(invoices), charged, recorded, tolerance)


# ============================================================== storing findings


@dataclass
class RunResult:
    run_id: int
    period: str
    status: str
    counts: dict[str, Any] = field(default_factory=dict)
    stripe_requests: int = 0
    open_above_tolerance: int = 0
    error: str | None = None

    @property
    def exit_code(self) -> int:
        """1 when the run failed or open diffs above the tolerance remain (cron alerts)."""
        return 1 if self.status != "complete" or self.open_above_tolerance else 0

    def describe(self) -> list[str]:
        if self.status != "complete":
            return [f"reconcile {self.period}: run {self.run_id} FAILED: {self.error}"]
        out = [
            f"reconcile {self.period}: run {self.run_id} complete, "
            f"{self.stripe_requests} Stripe requests"
        ]
        for kind, row in sorted(self.counts.get("kinds", {}).items()):
            out.append(
                f"  {kind}: {row['raised']} raised, {row['within_tolerance']} within tolerance"
            )
        for note in self.counts.get("notes", []):
            out.append(f"  note: {note}")
        out.append(f"  open diffs above tolerance: {self.open_above_tolerance}")
        return out


def _in_scope(subject: str, scope: str) -> bool:
    return (
        subject.startswith(DEMO_SCOPE)
        if scope == DEMO_SCOPE
        else not subject.startswith(DEMO_SCOPE)
    )


def store_findings(
    session: Session,
    run: ReconciliationRun,
    findings: Sequence[Finding],
    checked_kinds: Iterable[str],
    *,
    now: datetime,
    scope: str = "",
) -> dict[str, int]:
    """Upsert findings by (period, kind, subject); unseen open diffs of checked kinds go 'gone'."""
    existing = {
        (d.kind, d.subject): d
        for d in session.exec(
            select(ReconciliationDiff).where(ReconciliationDiff.period == run.period)
        ).all()
    }
    stats = {"new": 0, "updated": 0, "reopened": 0, "gone": 0}
    seen: set[tuple[str, str]] = set()
    for f in findings:
        seen.add((f.kind, f.subject))
        diff = existing.get((f.kind, f.subject))
        if diff is None:
            diff = ReconciliationDiff(
                period=run.period, kind=f.kind, subject=f.subject, first_seen_at=now
            )
            stats["new"] += 1
        else:
            stats["updated"] += 1
            changed = (diff.local_value, diff.remote_value, diff.delta_minor) != (
                f.local_value,
                f.remote_value,
                f.delta_minor,
            )
            if diff.status == "gone" or (diff.status == "resolved" and changed):
                if diff.status == "resolved":
                    audit.record(
                        session,
                        actor=run.actor,
                        action="reconcile.reopen",
                        target=f"diff:{diff.id}",
                        before={
                            "status": diff.status,
                            "resolution": diff.resolution,
                            "delta": diff.delta_minor,
                        },
                        after={"status": "open", "delta": f.delta_minor},
                        at=now,
                    )
                diff.status = "open"
                stats["reopened"] += 1
        diff.run_id = run.id
        diff.customer_id = f.customer_id
        diff.invoice_id = f.invoice_id
        diff.currency = f.currency
        diff.local_value = f.local_value
        diff.remote_value = f.remote_value
        diff.delta_minor = f.delta_minor
        diff.within_tolerance = f.within_tolerance
        diff.last_seen_at = now
        session.add(diff)
    kinds = set(checked_kinds)
    for key, diff in existing.items():
        if (
            key not in seen
            and diff.kind in kinds
            and diff.status == "open"
            and _in_scope(diff.subject, scope)
        ):
            diff.status = "gone"
            diff.last_seen_at = now
            session.add(diff)
            stats["gone"] += 1
    session.flush()
    return stats


def open_above_tolerance(session: Session, period: str) -> int:
    query = (
        select(func.count())
        .select_from(ReconciliationDiff)
        .where(
            ReconciliationDiff.period == period,
            ReconciliationDiff.status == "open",
            col(ReconciliationDiff.within_tolerance).is_(False),
        )
    )
    return int(session.exec(query).one())


# ============================================================== the run


def make_reader(settings: Settings) -> ReconcileReader | None:
    """A Stripe reader when Stripe is configured (retries are the reader's, not the SDK's)."""
    if not settings.stripe_enabled:
        return None
    return ReconcileReader(make_client(settings, max_network_retries=0))


def _start_run(
    engine: Engine, period: Period, tolerance: Tolerance, actor: str, now: datetime
) -> int:
    with session_scope(engine) as session:
        run = ReconciliationRun(
            period=str(period),
            actor=actor,
            status="running",
            tolerance_pct=tolerance.pct,
            started_at=now,
        )
        session.add(run)
        session.flush()
        return run.id or 0


def _fail_run(engine: Engine, run_id: int, error: str, requests: int) -> None:
    with session_scope(engine) as session:
        run = session.get(ReconciliationRun, run_id)
        if run is not None:
            run.status = "failed"
            run.error = error
            run.stripe_requests = requests
            run.finished_at = utcnow()
            session.add(run)


def reconcile_period(
    engine: Engine,
    period: Period,
    *,
    tolerance: Tolerance | None = None,
    reader: ReconcileReader | None = None,
    actor: str = "system",
    now: datetime | None = None,
    deep_lines: bool = False,
) -> RunResult:
    """One reconciliation run; a Stripe failure leaves a failed run and the old diffs intact."""
    tolerance = tolerance or Tolerance()
    now = now or utcnow()
    run_id = _start_run(engine, period, tolerance, actor, now)
    notes: list[str] = []
    findings: list[Finding] = []
    checked: list[str] = []
    counts: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        with session_scope(engine) as session:
            if reader is not None:
                side = read_stripe_side(session, period, reader, deep_lines=deep_lines)
                findings += compare_invoices(side.local, side.remote, tolerance)
                checked += STRIPE_KINDS
                counts["invoices_local"] = len(side.local)
                counts["invoices_stripe"] = len(side.remote)
            else:
                notes.append("Stripe not configured: local vs Stripe (a) was skipped")
            aws = aws_findings(session, period, tolerance)
            if aws is None:
                notes.append(f"no cost snapshot for {period}: AWS restatements (b) were skipped")
            else:
                findings += aws[0]
                checked += AWS_KINDS
                notes += aws[1]["skipped"]
            findings += usage_findings(session, period, tolerance)
            checked += USAGE_KINDS
    except Exception as exc:
        requests = reader.requests if reader else 0
        message = str(exc) if isinstance(exc, BillingError) else f"unexpected {exc!r}"
        _fail_run(engine, run_id, message, requests)
        log.error("reconcile %s failed: %s", period, message)
        if not isinstance(exc, BillingError):
            raise
        return RunResult(run_id, str(period), "failed", stripe_requests=requests, error=message)
    waited = reader.seconds if reader else 0.0
    counts["timings"] = {
        "stripe_wait_s": round(waited, 3),
        "compute_s": round(time.perf_counter() - started - waited, 3),
    }
    counts.update(
        kinds=tally(findings), sections=sorted({_section(k) for k in checked}), notes=notes
    )
    try:
        with session_scope(engine) as session:
            run = session.get(ReconciliationRun, run_id)
            assert run is not None
            store_started = time.perf_counter()
            counts["diffs"] = store_findings(session, run, findings, checked, now=now)
            counts["timings"]["compute_s"] += round(time.perf_counter() - store_started, 3)
            run.status = "complete"
            run.counts = counts
            run.stripe_requests = reader.requests if reader else 0
            run.finished_at = utcnow()
            session.add(run)
            session.flush()
            remaining = open_above_tolerance(session, str(period))
    except Exception as exc:
        _fail_run(
            engine, run_id, f"storing the findings failed: {exc}", reader.requests if reader else 0
        )
        raise
    return RunResult(run_id, str(period), "complete", counts, run.stripe_requests, remaining)


def _section(kind: str) -> str:
    if kind in STRIPE_KINDS:
        return "stripe"
    return "aws" if kind in AWS_KINDS else "usage"


# ============================================================== resolutions (admin)


def _diff_or_error(session: Session, diff_id: int) -> ReconciliationDiff:
    diff = session.get(ReconciliationDiff, diff_id)
    if diff is None:
        raise ValidationError(f"Reconciliation diff #{diff_id} does not exist: reload the page.")
    return diff


def _snapshot(diff: ReconciliationDiff) -> dict[str, Any]:
    return {
        "status": diff.status,
        "resolution": diff.resolution,
        "note": diff.resolution_note,
        "kind": diff.kind,
        "subject": diff.subject,
        "delta_minor": diff.delta_minor,
    }


def _resolve(
    session: Session,
    identity: Identity,
    diff: ReconciliationDiff,
    resolution: str,
    note: str | None,
    now: datetime,
    extra: dict[str, Any] | None = None,
) -> ReconciliationDiff:
    before = _snapshot(diff)
    diff.status = "resolved"
    diff.resolution = resolution
    diff.resolution_note = note
    diff.resolved_by = identity.actor
    diff.resolved_at = now
    session.add(diff)
    audit.record(
        session,
        actor=identity.actor,
        action=f"reconcile.{resolution}",
        target=f"diff:{diff.id}",
        before=before,
        after={**_snapshot(diff), **(extra or {})},
        at=now,
    )
    session.flush()
    return diff


def accept_diff(
    session: Session, identity: Identity, diff_id: int, note: str, *, now: datetime | None = None
) -> ReconciliationDiff:
    """Accept a difference as explained; the note says why (required)."""
    require(identity, "admin", "resolve reconciliation diffs")
    if not note or not note.strip():
        raise ValidationError("Accepting a difference needs a note saying why it is fine.")
    diff = _diff_or_error(session, diff_id)
    return _resolve(session, identity, diff, "accepted", note.strip(), now or utcnow())


def true_up_description(diff: ReconciliationDiff) -> str:
    what = diff.subject.rsplit(":", 1)[-1]
    if diff.kind == "aws_restatement":
        return f"AWS adjustment for {diff.period} ({what})"
    return f"Usage adjustment for {diff.period} ({what})"


def schedule_true_up(
    session: Session,
    identity: Identity,
    diff_id: int,
    note: str | None = None,
    *,
    now: datetime | None = None,
) -> TrueUp:
    """Turn a restatement or usage diff into a line on the customer's next invoice (once)."""
    require(identity, "admin", "schedule true-ups")
    diff = _diff_or_error(session, diff_id)
    if diff.kind not in TRUE_UP_KINDS:
        raise ValidationError(
            f"A true-up is for AWS restatements and usage differences, not {diff.kind!r}: "
            "sync from Stripe or accept with a note instead."
        )
    if diff.customer_id is None or not diff.currency or diff.delta_minor == 0:
        raise ValidationError("This difference has no customer or amount to true up.")
    existing = session.exec(select(TrueUp).where(TrueUp.diff_id == diff.id)).first()
    true_up = existing or TrueUp(
        customer_id=diff.customer_id,
        source_period=diff.period,
        description=true_up_description(diff),
        amount_minor=diff.delta_minor,
        currency=diff.currency,
        diff_id=diff.id,
        created_by=identity.actor,
    )
    session.add(true_up)
    session.flush()
    _resolve(
        session,
        identity,
        diff,
        "true_up",
        (note or "").strip() or None,
        now or utcnow(),
        extra={
            "true_up_id": true_up.id,
            "amount_minor": true_up.amount_minor,
            "currency": true_up.currency,
        },
    )
    return true_up


# Stripe statuses a local invoice may take over when syncing.
_SYNCABLE_STATUSES = frozenset({"draft", "open", "paid", "void", "uncollectible"})


def sync_from_stripe(
    session: Session,
    identity: Identity,
    diff_id: int,
    *,
    reader: ReconcileReader | None = None,
    now: datetime | None = None,
) -> ReconciliationDiff:
    """Take the payment status (and link) of a status diff from Stripe, re-reading the invoice.

    Stripe is the source of truth for payment status (DESIGN.md section 7). Demo findings have
    no Stripe object behind them, so they take the remote status the demo run recorded.
    """
    require(identity, "admin", "sync invoices from Stripe")
    diff = _diff_or_error(session, diff_id)
    if diff.kind != "status" or diff.invoice_id is None:
        raise ValidationError(
            f"Sync from Stripe applies to status differences; for {diff.kind!r} accept with a "
            "note or schedule a true-up."
        )
    invoice = session.get(Invoice, diff.invoice_id)
    if invoice is None:
        raise ValidationError(f"Local invoice #{diff.invoice_id} no longer exists.")
    before = {"status": invoice.status, "stripe_invoice_id": invoice.stripe_invoice_id}
    now = now or utcnow()
    if diff.subject.startswith(DEMO_SCOPE):
        status = (diff.remote_value or "").split(" ", 1)[0]
    else:
        stripe_id = invoice.stripe_invoice_id or _stripe_id_in(diff.remote_value)
        if reader is None or not stripe_id:
            raise PaymentProviderError(
                "Syncing needs Stripe: set STRIPE_API_KEY (or STRIPE_API_BASE) and try again."
            )
        obj = reader.invoice(stripe_id)
        if obj is None:
            raise PaymentProviderError(
                f"Stripe has no invoice {stripe_id}; accept the diff with a note."
            )
        status = str(obj.get("status") or "")
        invoice.stripe_invoice_id = str(obj["id"])
        invoice.amount_paid_minor = int(obj.get("amount_paid") or invoice.amount_paid_minor)
        invoice.hosted_invoice_url = obj.get("hosted_invoice_url") or invoice.hosted_invoice_url
        invoice.number = obj.get("number") or invoice.number
    if status not in _SYNCABLE_STATUSES:
        raise ValidationError(f"Stripe status {status!r} cannot be applied to a local invoice.")
    if status == "paid" and invoice.paid_at is None:
        invoice.paid_at = now
        invoice.amount_paid_minor = invoice.amount_paid_minor or invoice.total_minor
    invoice.status = status
    invoice.updated_at = now
    session.add(invoice)
    audit.record(
        session,
        actor=identity.actor,
        action="invoice.sync_from_stripe",
        target=f"invoice:{invoice.id}",
        before=before,
        after={"status": invoice.status, "stripe_invoice_id": invoice.stripe_invoice_id},
        at=now,
    )
    return _resolve(session, identity, diff, "synced", f"status set to {status} from Stripe", now)


def _stripe_id_in(text: str | None) -> str | None:
    for token in (text or "").replace("(", " ").replace(")", " ").split():
        if token.startswith("in_"):
            return token
    return None


# ============================================================== true-ups for invoicing


# ============================================================== reading for the page


def latest_run(session: Session, period: str | None = None) -> ReconciliationRun | None:
    query = select(ReconciliationRun)
    if period:
        query = query.where(ReconciliationRun.period == period)
    return session.exec(query.order_by(col(ReconciliationRun.id).desc())).first()


def runs(session: Session, limit: int = 50) -> list[ReconciliationRun]:
    query = select(ReconciliationRun).order_by(col(ReconciliationRun.id).desc()).limit(limit)
    return list(session.exec(query).all())


def diffs(
    session: Session,
    *,
    period: str | None = None,
    kinds: Sequence[str] | None = None,
    statuses: Sequence[str] | None = None,
    include_within_tolerance: bool = False,
) -> list[ReconciliationDiff]:
    query = select(ReconciliationDiff)
    if period:
        query = query.where(ReconciliationDiff.period == period)
    if kinds:
        query = query.where(col(ReconciliationDiff.kind).in_(list(kinds)))
    if statuses:
        query = query.where(col(ReconciliationDiff.status).in_(list(statuses)))
    if not include_within_tolerance:
        query = query.where(col(ReconciliationDiff.within_tolerance).is_(False))
    order = (
        col(ReconciliationDiff.period).desc(),
        col(ReconciliationDiff.kind),
        col(ReconciliationDiff.id),
    )
    return list(session.exec(query.order_by(*order)).all())


def periods_with_diffs(session: Session) -> list[str]:
    rows = session.exec(select(ReconciliationDiff.period).distinct()).all()
    return sorted(set(rows), reverse=True)


def kind_label(kind: str) -> str:
    return kind.replace("_", " ")


__all__ = [
    "KINDS",
    "RunResult",
    "accept_diff",
    "diffs",
    "reconcile_period",
    "schedule_true_up",
    "store_findings",
    "sync_from_stripe",
]
