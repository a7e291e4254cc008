"""Read a CSV the way two kinds of reader do, to check that one record stays one row.

`records`: Python's csv reader on the text as written (newline=""), which ends a record on a
bare "\\r" as on "\\n". `records_split_on_any_line_end`: a reader that first splits the text on
every line end str.splitlines knows ("\\r", "\\r\\n", "\\n", ...), then joins the pieces of a
quoted cell back (as a spreadsheet does), so a bare "\\r" outside quotes splits the row.
"""

from __future__ import annotations

import csv
import io

# Texts with each line break, for text cells of every CSV writer's tests: a lone "\r" (which
# the csv module left unquoted), "\r\n", and "\n".
LONE_CR = "Acme\rEast"
CRLF = "first\r\nsecond"
LF = "third\nfourth"


def read_back(text: str) -> str:
    """What a cell written from `text` reads back as: every line break a "\n"."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def records(text: str) -> list[list[str]]:
    """The rows Python's csv reader finds in `text` (header included)."""
    return list(csv.reader(io.StringIO(text, newline="")))


def records_split_on_any_line_end(text: str) -> list[list[str]]:
    """The rows a reader that ends a line on "\\r" too finds in `text` (header included)."""
    rows: list[list[str]] = []
    pending: list[str] = []
    for piece in text.splitlines():
        pending.append(piece)
        joined = "\n".join(pending)
        if joined.count('"') % 2 == 0:  # outside quotes: the record ends here
            rows.extend(csv.reader(io.StringIO(joined, newline="")))
            pending = []
    assert not pending, "a quoted cell is never closed"
    return rows


def both_readers(text: str, expected: int) -> list[list[str]]:
    """The rows (header first) of a CSV of `expected` records, as both readers find them; fails
    when either finds another count (a row split on a "\r") or when they disagree."""
    found = {reader.__name__: reader(text) for reader in (records, records_split_on_any_line_end)}
    for name, rows in found.items():
        assert len(rows) - 1 == expected, f"{name}: {len(rows) - 1} records, not {expected}"
    plain, split = found.values()
    assert split == plain
    return plain


def as_dicts(rows: list[list[str]]) -> list[dict[str, str]]:
    """Rows under the header's names; fails when a row has more or fewer cells."""
    header, *body = rows
    for row in body:
        assert len(row) == len(header), row
    return [dict(zip(header, row, strict=True)) for row in body]
