"""Reports of the hub, computed in the database: sales, stock flow, shrink, alert statistics, the cold chain,
the daily store summary and the chain roll-up.

``queries`` holds the SQL (SQLite and PostgreSQL alike), ``cold_chain`` the per-store daily cold-chain report
with its CSV and PDF, ``summary`` the daily store summary and the roll-up, ``formats`` CSV with a byte order
mark, Excel and PDF in a CJK font, ``documents`` every report as a file (for the API, the console and
scheduled delivery), ``api`` the routes under ``/api/v1/reports``. See docs/reports.md.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hub.csvcells import spreadsheet_safe_row


def _cell(value: Any) -> str:
    """A JSON value as a CSV cell: null is empty, booleans as JSON writes them, the rest as text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """A CSV file (header, then one line per row; columns a row lacks are empty) of JSON-form values.

    Text that a spreadsheet would run as a formula is written behind an apostrophe (:mod:`hub.csvcells`).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(spreadsheet_safe_row(_cell(row.get(column)) for column in columns))
    return out.getvalue()
