"""Small texts shared by page data modules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

import pandas as pd

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


DAY = "%Y-%m-%d"
MINUTE = "%Y-%m-%d %H:%M"


def blank_missing(
    frame: pd.DataFrame,
    dates: Mapping[str, str] | None = None,
    counts: Sequence[str] = (),
    keep: Sequence[str] = (),
) -> pd.DataFrame:
    """A copy of a table for st.dataframe in which an empty cell reads blank.

    Streamlit's grid (1.67, seen in chromium) draws every missing value, None, NaN, NaT or
    pd.NA in any column type, links included, as a grey "None"; it draws '' as nothing.
    Text columns get '' for None; the date/time columns named in `dates` become text in that
    strftime format (DAY, MINUTE; '' when missing), which still sorts in time order; the
    whole-number columns in `counts` become space-padded text ('' when missing), which the
    grid still sorts by size. Other numeric columns are left as they are, and so are the
    `keep` columns."""
    shown = frame.copy()
    for name, fmt in (dates or {}).items():
        shown[name] = [
            "" if v is None or pd.isna(v) else pd.Timestamp(v).strftime(fmt) for v in shown[name]
        ]
    for name in counts:
        shown[name] = ["" if v is None or pd.isna(v) else f"{int(v):>9}" for v in shown[name]]
    for name in shown.columns:
        if shown[name].dtype == object and name not in keep:
            shown[name] = shown[name].where(shown[name].notna(), "")
    return shown
