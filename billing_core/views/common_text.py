"""Small texts shared by page data modules."""

from __future__ import annotations

from decimal import Decimal

from billing_core.states import CreditState


def pct_effect(pct: str | Decimal) -> str:
    """'10' -> '+10% markup', '-5' -> '5% discount', '0' -> 'at AWS prices'."""
    value = Decimal(str(pct))
    if value > 0:
        return f"+{value.normalize():f}% markup"
    if value < 0:
        return f"{(-value).normalize():f}% discount"
    return "at AWS prices"


_CREDIT_WORDS = {
    CreditState.PARTIALLY_CREDITED: "partially credited",
    CreditState.CREDITED: "credited",
    CreditState.REFUNDED: "credited",
}


def status_label(status: str, credit: CreditState = CreditState.NONE) -> str:
    """An invoice's display status as people read it: 'partially_refunded' -> 'partially
    refunded'; with credit notes their word beside it ('paid · credited', 'open · partially
    credited'), since Stripe keeps a fully credited invoice `paid`. CSV exports and the
    `?status=` filter keep the machine words."""
    word = str(status).replace("_", " ")
    return f"{word} · {_CREDIT_WORDS[credit]}" if credit in _CREDIT_WORDS else word
