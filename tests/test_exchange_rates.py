"""Exchange rates: the one converter (pure tables) and loading recorded rates."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlmodel import Session, select

from billing_core.errors import ExchangeRateMissing, ValidationError
from billing_core.exchange_rates.convert import Rates, cross_rate
from billing_core.exchange_rates.rates import load_rates, set_rate
from billing_core.models import AuditEntry
from billing_core.money import Money
from billing_core.periods import Period

D = Decimal
OCT = Rates("2026-10", {"EUR": D("0.8"), "GBP": D("0.7"), "JPY": D("150")}, {"EUR": "ecb"})


@pytest.mark.parametrize(
    ("amount", "source", "target", "expected"),
    [
        ("10", "EUR", "EUR", "10"),  # same currency: untouched
        ("10", "USD", "EUR", "8.0"),
        ("10", "EUR", "USD", "12.5"),
        ("100", "EUR", "GBP", "87.50"),  # via USD: 100 / 0.8 * 0.7
        ("1", "GBP", "JPY", "214.2857142857142857142857143"),  # full precision, not rounded
        ("-4.20", "USD", "EUR", "-3.360"),  # credits convert too
    ],
)
def test_convert_table(amount: str, source: str, target: str, expected: str) -> None:
    got = OCT.convert(Money.of(amount, source), target)
    assert got == Money.of(expected, target)


def test_factor_is_the_cross_rate_via_usd() -> None:
    assert OCT.factor("EUR", "GBP") == cross_rate(D("0.7"), D("0.8")) == D("0.875")
    assert OCT.factor("USD", "EUR") == D("0.8")
    assert OCT.factor("XYZ", "XYZ") == 1  # nothing to convert, no rate needed


def test_missing_rate_says_how_to_record_it() -> None:
    with pytest.raises(ExchangeRateMissing, match=r"USD->CHF .* 2026-10: record one .*set-rate"):
        OCT.convert(Money.of(1, "EUR"), "CHF")
    with pytest.raises(ExchangeRateMissing):
        Rates("2026-10", {"EUR": D(0)}).usd_rate("EUR")  # a zero rate is no rate


def test_with_rate_pins_one_currency() -> None:
    pinned = OCT.with_rate("EUR", D("0.9"))
    assert pinned.usd_rate("EUR") == D("0.9") and pinned.usd_rate("GBP") == D("0.7")
    assert OCT.usd_rate("EUR") == D("0.8")  # the original is unchanged


def test_load_rates_for_the_period_or_the_latest(session: Session) -> None:
    for period, rate in (("2026-09", "0.91"), ("2026-10", "0.92")):
        set_rate(
            session,
            period=Period.parse(period),
            currency="eur",
            rate=rate,
            source=f"ECB {period}",
            actor="t",
        )
    nov = Period(2026, 11)
    assert load_rates(session, Period(2026, 10)).usd_to == {"EUR": D("0.92")}
    assert load_rates(session, nov).usd_to == {}
    latest = load_rates(session, nov, latest=True)
    assert (latest.period, latest.usd_rate("EUR"), latest.sources) == (
        "2026-11",
        D("0.92"),
        {"EUR": "ECB 2026-10"},
    )
    assert load_rates(session, Period(2026, 9), latest=True).usd_to == {"EUR": D("0.91")}


def test_set_rate_corrects_and_is_audited(session: Session) -> None:
    oct_ = Period(2026, 10)
    set_rate(session, period=oct_, currency="EUR", rate="0.92", source="ECB", actor="a")
    set_rate(session, period=oct_, currency="EUR", rate="0.93", source="ECB fix", actor="a")
    assert load_rates(session, oct_).usd_to == {"EUR": D("0.93")}
    entries = session.exec(select(AuditEntry).where(AuditEntry.action == "exchange_rate.set"))
    assert len(entries.all()) == 2
    for bad, match in (("USD", "needs no exchange rate"), ("EUR", "positive")):
        with pytest.raises(ValidationError, match=match):
            set_rate(session, period=oct_, currency=bad, rate="-1", source="x", actor="a")


@pytest.mark.parametrize(
    ("rate", "stored"),
    [
        ("0.9213", "0.9213"),
        ("0.92130000000000", "0.9213"),  # trailing zeros are not decimals that get lost
        ("0.0001", "0.0001"),  # the bounds themselves are rates
        ("1000000", "1000000"),
        ("1.5E+2", "150"),
    ],
)
def test_set_rate_accepts_plain_rates_within_bounds(
    session: Session, rate: str, stored: str
) -> None:
    row = set_rate(
        session, period=Period(2026, 10), currency="JPY", rate=rate, source="s", actor="a"
    )
    assert row.rate == D(stored)
