"""The one rule for a text cell of every CSV this tool writes (invoices, lines, audit, margin,
AWS costs): one record stays one row, and no cell runs as a spreadsheet formula.

Line breaks: the csv module (lineterminator "\\n") quotes a cell holding "\\n" but writes a lone
"\\r" bare, and a spreadsheet or reader that ends lines on "\\r" then splits the row, so the
amounts after that cell land under the wrong headers. "\\r\\n" and lone "\\r" become "\\n", which
the csv module quotes.

Formulas (CSV injection): a cell starting with = + - @ or a tab gets a quote first.
"""

from __future__ import annotations

# First characters a spreadsheet runs as a formula ("\r" too, though cell_text never leaves
# one): `text[:1] in FORMULA_FIRST` ('' is not in it).
FORMULA_FIRST = frozenset(("=", "+", "-", "@", "\t", "\r"))


def one_line_break(text: str) -> str:
    """`text` with "\\r\\n" and lone "\\r" made "\\n" (the text itself when it has no "\\r")."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def cell_text(value: str | None) -> str:
    """A text cell for a CSV: line breaks made "\\n", a quote before a formula's first
    character; None is ''."""
    text = one_line_break(value or "")
    return "'" + text if text[:1] in FORMULA_FIRST else text


class CellCache(dict[str | None, str]):
    """Text (or None) -> its cell_text, made on first use: for a writer meeting the same texts
    on many rows (the lines CSV's descriptions, services, metrics), `cache[text]` is then one
    dict lookup. The caller clears it when it grows past what it wants to keep."""

    __slots__ = ()

    def __missing__(self, text: str | None) -> str:
        cell = self[text] = cell_text(text)
        return cell
