"""Recorded exchange rates: loading a period's rates and `set-rate` (audited).

Rates live in the ExchangeRate table as USD->X per month; `load_rates` turns them into the
pure `Rates` that every conversion goes through (`exchange_rates.convert`)."""

from __future__ import annotations

from decimal import Decimal

from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.errors import MoneyError, ValidationError
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


# Stored with 10 decimals (ExchangeRate.rate). The bounds keep out typos and exponents
# (1e308): no currency is worth more than 10,000 USD, and the weakest that exist trade at well
# under a million per USD.
RATE_DECIMALS = 10
RATE_MIN = Decimal("0.0001")
RATE_MAX = Decimal(1_000_000)


def set_rate(
    session: Session, *, period: Period, currency: str, rate: object, source: str, actor: str
) -> ExchangeRate:
    """Record (or correct) the USD->currency rate of a period (units of currency per 1 USD).

    Audited. Raises ValidationError (nothing written) for an unknown currency or USD, a rate
    that is not a plain number, not within RATE_MIN..RATE_MAX, or with more than
    RATE_DECIMALS decimals, and an empty source.
    """
    try:
        quote = normalize_currency(currency)
    except MoneyError as exc:
        raise ValidationError(str(exc)) from None
    if quote == "USD":
        raise ValidationError("USD needs no exchange rate: give the invoice currency, e.g. EUR.")
    value = _checked_rate(rate, quote)
    if not source.strip():
        raise ValidationError("Say where the rate comes from (--source), e.g. 'ECB 2026-10-31'.")
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


def _checked_rate(rate: object, quote: str) -> Decimal:
    try:
        value = to_decimal(rate)
    except MoneyError:
        raise ValidationError(
            f"The rate {rate!r} is not a number: give {quote} per 1 USD, e.g. 0.9213."
        ) from None
    if value <= 0:
        raise ValidationError(f"The rate must be positive ({quote} per 1 USD), got {rate}.")
    if not RATE_MIN <= value <= RATE_MAX:
        raise ValidationError(
            f"The rate {rate} is out of range: a USD->{quote} rate lies between "
            f"{RATE_MIN} and {RATE_MAX:,} {quote} per 1 USD."
        )
    if -value.normalize().as_tuple().exponent > RATE_DECIMALS:  # type: ignore[operator]
        raise ValidationError(
            f"The rate {rate} has more than {RATE_DECIMALS} decimals; "
            "round it to the precision its source publishes."
        )
    return value.quantize(Decimal(1).scaleb(-RATE_DECIMALS))
