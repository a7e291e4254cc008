"""Bounded memos pricing keeps between customers (invoicing/pricing.py). Pure: no I/O, no clock.

What pricing remembers is immutable (rule sets, line texts, whole lines) and keyed by
everything it depends on, so a memo only saves work: a customer priced from it gets the lines
a fresh plan would give (tests/test_pricing_memo.py).
"""

from __future__ import annotations

from decimal import Decimal
from itertools import count
from typing import TypeVar

# Entries a memo holds before it starts again (bounds memory on long-lived plan terms).
MEMO_LIMIT = 50_000

_V = TypeVar("_V")

# What a line says depends on (month, currency, rate): each such triple gets a number, the key
# of the line-text memos (a tuple holding a Decimal would be hashed again on every line).
_TEXT_KEYS: dict[tuple[str, str, Decimal], int] = {}
_text_numbers = count()


def text_key(period: str, currency: str, factor: Decimal) -> int:
    """The number standing for (month, currency, rate) in the memos of line texts; a number
    is never reused, so texts remembered under a forgotten one are simply never read."""
    key = _TEXT_KEYS.get((period, currency, factor))
    if key is None:
        if len(_TEXT_KEYS) >= MEMO_LIMIT:
            _TEXT_KEYS.clear()
        key = _TEXT_KEYS[(period, currency, factor)] = next(_text_numbers)
    return key


def remember(memo: dict[object, _V], key: object, value: _V) -> None:
    """memo[key] = value, emptying the memo first when it is full."""
    if len(memo) >= MEMO_LIMIT:
        memo.clear()
    memo[key] = value
