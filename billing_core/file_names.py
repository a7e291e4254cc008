"""Names of exported files that say what was exported and how it was filtered.

`invoices_2026-09_paid-open_EUR.csv` reads as "the invoices of September 2026 that are paid or
open, in euros"; an accountant who finds it in a folder months later needs no other context.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_UNSAFE = re.compile(r"(?:[^\w.]|_)+")
MAX_PART = 40


def _part(value: str | Iterable[str]) -> str:
    text = value if isinstance(value, str) else "-".join(str(v) for v in value)
    return _UNSAFE.sub("-", text).strip("-")[:MAX_PART].strip("-")


def export_file_name(what: str, *filters: str | Iterable[str] | None, ext: str = "csv") -> str:
    """`what`, then every filter that narrowed the export (None or empty: not filtered), joined
    with '_'; anything but letters (accented too), digits and '.' becomes '-'. 'all' when no
    filter applies, so an unfiltered export says so."""
    parts = [p for p in (_part(f) for f in filters if f) if p]
    return f"{_part(what)}_{'_'.join(parts) if parts else 'all'}.{ext}"
