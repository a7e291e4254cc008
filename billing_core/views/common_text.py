"""Small texts shared by page data modules."""

from __future__ import annotations

from decimal import Decimal


def pct_effect(pct: str | Decimal) -> str:
    """'10' -> '+10% markup', '-5' -> '5% discount', '0' -> 'at AWS prices'."""
    value = Decimal(str(pct))
    if value > 0:
        return f"+{value.normalize():f}% markup"
    if value < 0:
        return f"{(-value).normalize():f}% discount"
    return "at AWS prices"
