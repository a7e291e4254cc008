"""Invoice runs: drafts for a period, then a resumable, idempotent push of each to Stripe.

A run for period P (DESIGN.md section 6):
1. refuses a period that is not closed yet, then takes the run lock for P;
2. prices every active customer that has no invoice for P yet and saves all drafts in one
   transaction (the unique key customer+period refuses a second invoice);
3. pushes every unfinished invoice of P with bounded concurrency under one rate limiter:
   create (auto_advance off, local ids in metadata), add all lines in one call, finalize, then pay
   (charge_automatically) or send (send_invoice). Each call carries an idempotency key made of
   this database's install id, the local invoice id and the step; each step's result is saved
   before the next call, so a killed run resumes where it stopped.

Recovery rules. `push_step` is saved as "creating" before the create call: an invoice found in
that state has no Stripe id but may exist in Stripe, so it is looked up by metadata before a
new create (that keeps a retry safe after Stripe forgot the idempotency key, 24 h later). An
invoice resumed from an earlier attempt in any later step is re-read from Stripe once and its
step taken from Stripe's state, so lines are never added twice. A declined payment bumps
`pay_attempt`, so the next run's pay call gets a new key (Stripe would replay the decline).

Totals that are negative (credits larger than charges) are never sent to Stripe: the invoice
is kept with status "credit" and the amount is carried to the next period as a TrueUp, which
the next run bills as a credit line."""

from __future__ import annotations

import logging
from decimal import Decimal

from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.errors import (
    ValidationError,
)
from billing_core.invoicing.pricing import (
    Rates,
)
from billing_core.models import (
    ExchangeRate,
)
from billing_core.money import normalize_currency, to_decimal
from billing_core.periods import Period

log = logging.getLogger(__name__)


def load_rates(session: Session, period: Period) -> Rates:
    rows = session.exec(
        select(ExchangeRate).where(ExchangeRate.period == str(period), ExchangeRate.base == "USD")
    ).all()
    return Rates(
        period=str(period),
        usd_to={r.quote: r.rate for r in rows},
        sources={r.quote: r.source for r in rows},
    )


def set_rate(
    session: Session, *, period: Period, currency: str, rate: object, source: str, actor: str
) -> ExchangeRate:
    """Record (or correct) the USD->currency rate of a period; audited."""
    quote = normalize_currency(currency)
    value = to_decimal(rate)
    if quote == "USD":
        raise ValidationError("USD needs no exchange rate: give the invoice currency, e.g. EUR.")
    if value <= 0:
        raise ValidationError(f"The rate must be positive ({quote} per 1 USD), got {rate}.")
    if not source.strip():
        raise ValidationError("Say where the rate comes from (--source), e.g. 'ECB 2026-10-31'.")
    value = value.quantize(Decimal("0.0000000001"))
    row = session.exec(
        select(ExchangeRate).where(
            ExchangeRate.period == str(period),
            ExchangeRate.base == "USD",
            ExchangeRate.quote == quote,
        )
    ).first()
    before = {"rate": row.rate, "source": row.source} if row else None
    if row is None:
        row = ExchangeRate(period=str(period), base="USD", quote=quote, rate=value, source=source)
    else:
        row.rate, row.source = value, source
    session.add(row)
    audit.record(
        session,
        actor=actor,
        action="exchange_rate.set",
        target=f"USD->{quote} {period}",
        before=before,
        after={"rate": value, "source": source},
    )
    session.flush()
    return row


def usd_rates(session: Session, period: Period, *, latest: bool = False) -> dict[str, Decimal]:
    """USD->currency rates recorded for `period`; with `latest`, the newest at or before it.

    Invoices use the period's own rate; `latest` is for estimates during a month whose rate
    is not recorded yet.
    """
    query = select(ExchangeRate).where(ExchangeRate.base == "USD")
    if latest:
        query = query.where(col(ExchangeRate.period) <= str(period)).order_by(
            col(ExchangeRate.period)
        )
    else:
        query = query.where(ExchangeRate.period == str(period))
    return {r.quote: r.rate for r in session.exec(query).all()}  # later periods win
