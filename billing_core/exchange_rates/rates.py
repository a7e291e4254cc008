"""Recorded exchange rates: loading a period's rates and `set-rate` (audited).

Rates live in the ExchangeRate table as USD->X per month; `load_rates` turns them into the
pure `Rates` that every conversion goes through (`exchange_rates.convert`)."""

from __future__ import annotations

from decimal import Decimal

from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.errors import ValidationError
from billing_core.exchange_rates.convert import COST_CURRENCY, Rates
from billing_core.models import ExchangeRate
from billing_core.money import normalize_currency, to_decimal
from billing_core.periods import Period


def load_rates(session: Session, period: Period, *, latest: bool = False) -> Rates:
    """The USD->X rates recorded for `period`; with `latest`, the newest at or before it.

    Invoices use the period's own rate; `latest` is for estimates during a month whose rate
    is not recorded yet (the usage page and alerts).
    """
    query = select(ExchangeRate).where(ExchangeRate.base == COST_CURRENCY)
    if latest:
        query = query.where(col(ExchangeRate.period) <= str(period)).order_by(
            col(ExchangeRate.period)
        )
    else:
        query = query.where(ExchangeRate.period == str(period))
    rows = session.exec(query).all()  # later periods win
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
