"""The catalog's pure rules: GTIN check digits, currencies, time zones, opening hours, and the CSV rows
(header and row errors named by row and column, the write-then-parse round trip)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from hub.catalog.csv_io import PLANOGRAM, SKUS, STORES, CsvRowsError, SkuRow, parse_csv, write_csv
from hub.catalog.values import (
    OpeningHours,
    check_currency,
    check_time_zone,
    gtin_check_digit,
    money_text,
    normalise_gtin,
    parse_day,
)
from hub.domain.store_hours import is_open as store_is_open
from storegate.gtin import reserved_gtin_reason

# --------------------------------------------------------------------------- GTIN


@pytest.mark.parametrize(
    ("code", "gtin14"),
    [
        ("4006381333931", "04006381333931"),  # EAN-13 printed on a Stabilo pen
        ("036000291452", "00036000291452"),  # UPC-A of a Wrigley's pack
        ("96385074", "00000096385074"),  # EAN-8
        ("00012345678905", "00012345678905"),  # already GTIN-14
    ],
)
def test_valid_gtins_become_gtin14(code: str, gtin14: str) -> None:
    assert normalise_gtin(code) == gtin14


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("4006381333932", "check digit is 2, expected 1"),
        ("400638133393", "check digit is 3, expected 0"),
        ("12345", "8, 12, 13 or 14 digits, not 5"),
        ("400638133393A", "digits only"),
        ("".join(chr(0xFF10 + int(d)) for d in "4006381333931"), "digits only"),  # full-width: str.isdigit
    ],
)
def test_invalid_gtins_say_why(code: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalise_gtin(code)


@given(
    body=st.text(alphabet="0123456789", min_size=13, max_size=13), position=st.integers(0, 13), shift=st.integers(1, 9)
)
def test_any_single_digit_error_is_caught(body: str, position: int, shift: int) -> None:
    """The mod-10 check digit catches every one-digit typo, wherever it is."""
    code = body + str(gtin_check_digit(body))
    typo = code[:position] + str((int(code[position]) + shift) % 10) + code[position + 1 :]
    assume(reserved_gtin_reason(code.zfill(14)) is None)
    assert normalise_gtin(code) == code.zfill(14)
    with pytest.raises(ValueError, match="check digit"):
        normalise_gtin(typo)


# --------------------------------------------------------------------------- currencies, time zones


@pytest.mark.parametrize(
    ("code", "ok"),
    [("GBP", True), ("JPY", True), ("KWD", True), ("gbp", False), ("XAU", False), ("HRK", False), ("GB", False)],
)
def test_currencies_are_active_iso_4217_codes(code: str, ok: bool) -> None:
    if ok:
        assert check_currency(code) == code
    else:
        with pytest.raises(ValueError, match="ISO 4217"):
            check_currency(code)


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        ("2.5500", "GBP", "2.55"),
        ("2.5", "GBP", "2.50"),
        ("120.0000", "JPY", "120"),
        ("1.2345", "EUR", "1.2345"),
        ("1.5", "KWD", "1.500"),
    ],
)
def test_money_is_written_with_the_currency_digits(amount: str, currency: str, text: str) -> None:
    assert money_text(Decimal(amount), currency) == text


@pytest.mark.parametrize("name", ["Europe/London", "America/New_York", "Asia/Kolkata", "UTC"])
def test_iana_time_zones_are_accepted(name: str) -> None:
    assert check_time_zone(name).key == name


@pytest.mark.parametrize("name", ["Europe/Lundon", "europe/london", "GMT+1", "../../etc/passwd", "", "localtime"])
def test_other_time_zone_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="IANA time zone"):
        check_time_zone(name)


# --------------------------------------------------------------------------- opening hours


@pytest.mark.parametrize(
    ("cell", "stored"),
    [
        ("", []),
        ("08:00-20:00", ["08:00-20:00"]),
        ("08:00-12:00;13:00-20:00", ["08:00-12:00", "13:00-20:00"]),
        (" 08:00 - 12:00 ; 12:00-24:00 ", ["08:00-12:00", "12:00-24:00"]),  # touching intervals are fine
        ("00:00-24:00", ["00:00-24:00"]),
    ],
)
def test_day_hours_are_parsed(cell: str, stored: list[str]) -> None:
    assert [str(interval) for interval in parse_day(cell)] == stored


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("22:00-02:00", "ends before it starts; split a night across midnight"),
        ("08:00-08:00", "ends before it starts"),
        ("8:00-20:00", "is not a time HH:MM"),
        ("08:00-24:30", "between 00:00 and 24:00"),
        ("08:60-09:00", "between 00:00 and 24:00"),
        ("08:00", "not an interval"),
        ("08:00-12:00;11:00-13:00", "not overlap"),
        ("13:00-20:00;08:00-12:00", "in order"),
        ("08:00-12:00,13:00-20:00", "is not a time HH:MM"),
    ],
)
def test_bad_day_hours_say_why(cell: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_day(cell)


LONDON_HOURS = OpeningHours.from_json(
    {"mon": ["08:00-20:00"], "tue": ["08:00-20:00"], "sat": ["00:00-02:00", "09:00-24:00"], "sun": []}
)


@pytest.mark.parametrize(
    ("moment", "is_open"),
    [
        (datetime(2025, 3, 24, 7, 30, tzinfo=UTC), False),  # Monday 07:30 GMT
        (datetime(2025, 3, 31, 7, 30, tzinfo=UTC), True),  # Monday 08:30 BST: clocks went forward on Sunday
        (datetime(2025, 3, 31, 19, 0, tzinfo=UTC), False),  # Monday 20:00 BST: the end is exclusive
        (datetime(2025, 3, 26, 12, 0, tzinfo=UTC), False),  # Wednesday: not listed, closed
        (datetime(2025, 3, 29, 23, 30, tzinfo=UTC), True),  # Saturday 23:30 GMT
        (datetime(2025, 3, 30, 0, 30, tzinfo=UTC), False),  # Sunday 00:30 GMT: Saturday's night ended at 24:00
        (datetime(2025, 11, 1, 0, 30, tzinfo=UTC), True),  # Saturday 00:30 GMT
    ],
)
def test_stored_hours_are_read_by_the_rules_engine_on_the_store_wall_clock(moment: datetime, is_open: bool) -> None:
    assert store_is_open(LONDON_HOURS.to_store_hours("Europe/London"), moment) is is_open


def test_is_open_refuses_naive_moments() -> None:
    with pytest.raises(ValueError, match="aware"):
        store_is_open(LONDON_HOURS.to_store_hours("Europe/London"), datetime(2025, 3, 31, 9))


# --------------------------------------------------------------------------- CSV rows


def errors_of(text: str, fmt: object) -> list[str]:
    with pytest.raises(CsvRowsError) as caught:
        parse_csv(text, fmt)  # type: ignore[arg-type]
    return [str(error) for error in caught.value.errors]


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        ("", ["row 1: the file is empty; it needs a header"]),
        (
            "sku_id,name,price\nA,x,1\n",
            ["row 1, column currency: required column is missing"],
        ),
        (
            "sku_id,name,price,currency,colour,name\n",
            [
                "row 1, column colour: unknown column; columns are sku_id, gtin, name, unit_weight_g, pack_size, "
                "price, currency",
                "row 1, column name: column appears twice",
            ],
        ),
        ("sku_id,name,price,currency\n", []),  # optional columns may be left out; no rows is no error
    ],
)
def test_header_problems_are_named(text: str, errors: list[str]) -> None:
    if errors:
        assert errors_of(text, SKUS) == errors
    else:
        assert parse_csv(text, SKUS) == []


def test_every_bad_row_and_column_is_reported_at_once() -> None:
    text = (
        "sku_id,gtin,name,unit_weight_g,pack_size,price,currency\n"
        "A1,4006381333931,Pen,12.5,1,1.20,GBP\n"
        "A2,4006381333932,,0,0,-1,gbp\n"
        "A3,,Ok,,,2.00,EUR\n"
        "A4,,Too precise,,,1.23456,EUR\n"
        "A1,,Again,,,1,GBP\n"
        "A5,,Short,1\n"
    )
    assert errors_of(text, SKUS) == [
        "row 3, column gtin: check digit is 2, expected 1",
        "row 3, column name: a value is required",
        "row 3, column unit_weight_g: Input should be greater than 0",
        "row 3, column pack_size: Input should be greater than or equal to 1",
        "row 3, column price: Input should be greater than or equal to 0",
        "row 3, column currency: 'gbp' is not an ISO 4217 currency code (upper case, e.g. GBP, EUR, JPY)",
        "row 5, column price: Decimal input should have no more than 4 decimal places",
        "row 6, column sku_id: A1 is already on row 2",
        "row 7: 4 values for 7 columns",
    ]


def test_rows_are_counted_as_records_not_lines() -> None:
    """A quoted name spanning two lines is one row; a blank line is a row that is skipped."""
    text = 'sku_id,name,price,currency\nA1,"two\nlines",1,GBP\n\nA2,x,-1,GBP\n'
    assert errors_of(text, SKUS) == ["row 4, column price: Input should be greater than or equal to 0"]


def test_store_rows_check_time_zone_and_hours() -> None:
    header = "store_id,name,timezone,currency,mon,tue,wed,thu,fri,sat,sun\n"
    text = header + (
        "store-1,High St,Europe/London,GBP,08:00-20:00,08:00-20:00,,,,,\n"
        "Store 2,Mall,Europe/Lundon,EUR,22:00-02:00,,,,,,25:00-26:00\n"
    )
    assert errors_of(text, STORES) == [
        "row 3, column store_id: String should match pattern '^[a-z0-9][a-z0-9_-]{0,62}$'",
        "row 3, column timezone: 'Europe/Lundon' is not an IANA time zone name (e.g. Europe/London, America/New_York)",
        "row 3, column mon: '22:00-02:00' ends before it starts; split a night across midnight, e.g. 22:00-24:00 and "
        "00:00-02:00 of the next day",
        "row 3, column sun: '25:00' is not a time between 00:00 and 24:00",
    ]


def test_slot_minimum_cannot_exceed_capacity() -> None:
    text = "store_id,shelf_id,slot,sku_id,capacity,min_quantity\ns-1,shelf-1,1,A,5,6\ns-1,shelf-1,256,A,5,5\n"
    assert errors_of(text, PLANOGRAM) == [
        "row 2, column min_quantity: minimum 6 is more than the capacity 5",
        "row 3, column slot: Input should be less than or equal to 255",
    ]


def test_a_byte_order_mark_and_blanks_around_cells_are_ignored() -> None:
    from hub.catalog.csv_io import decode_csv

    text = decode_csv("\ufeffsku_id , name,price,currency\n A1 , Pen ,1.5, GBP \n".encode())
    [parsed] = parse_csv(text, SKUS)
    assert parsed.value == SkuRow(sku_id="A1", name="Pen", price=Decimal("1.5"), currency="GBP")


def test_undecodable_bytes_name_their_row() -> None:
    from hub.catalog.csv_io import decode_csv

    with pytest.raises(CsvRowsError, match=r"row 3: not UTF-8"):
        decode_csv(b"sku_id,name,price,currency\nA1,x,1,GBP\nA2,caf\xe9,1,GBP\n")


sku_rows = st.builds(
    SkuRow,
    sku_id=st.from_regex(r"[A-Z0-9][A-Z0-9 .,\"'-]{0,20}[A-Z0-9]", fullmatch=True),
    gtin=st.none()
    | st.text(alphabet="0123456789", min_size=12, max_size=12)
    .map(lambda b: b + str(gtin_check_digit(b)))
    .filter(lambda code: reserved_gtin_reason(code.zfill(14)) is None),
    name=st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
        min_size=1,
        max_size=40,
    ),
    unit_weight_g=st.none() | st.decimals(min_value=Decimal("0.001"), max_value=Decimal("999999.999"), places=3),
    pack_size=st.integers(1, 1000),
    price=st.decimals(min_value=0, max_value=Decimal("99999999.9999"), places=4),
    currency=st.sampled_from(["GBP", "EUR", "JPY", "KWD", "USD"]),
)


@given(rows=st.lists(sku_rows, max_size=8, unique_by=lambda row: row.sku_id))
def test_written_sku_rows_parse_back_equal(rows: list[SkuRow]) -> None:
    """Whatever is valid survives write -> parse: quoting, commas, quotes, unicode, money digits."""
    parsed = parse_csv(write_csv(SKUS, rows), SKUS)
    assert [p.value for p in parsed] == rows
    assert [p.row for p in parsed] == list(range(2, len(rows) + 2))


@st.composite
def day_hours(draw: st.DrawFn) -> list[str]:
    """Up to four sorted, non-overlapping intervals of one day (touching allowed)."""
    edges = sorted(draw(st.lists(st.integers(0, 24 * 60), min_size=0, max_size=8, unique=True)))
    pairs = list(zip(edges[::2], edges[1::2], strict=False))
    return [f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}" for s, e in pairs]


@given(days=st.lists(day_hours(), min_size=7, max_size=7))
def test_opening_hours_survive_json_and_csv(days: list[list[str]]) -> None:
    """Stored JSON -> hours -> CSV cells -> hours -> JSON is the identity."""
    stored = dict(zip(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), days, strict=True))
    hours = OpeningHours.from_json(stored)
    cells = [";".join(str(i) for i in day) for day in hours.days]
    assert OpeningHours(days=tuple(parse_day(cell) for cell in cells)).to_json() == stored
