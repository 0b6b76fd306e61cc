"""The catalog's CSV files, without I/O: one pydantic model per kind of row, parsing that reports every bad
row and column at once, and writing that parses back to the same rows.

Row numbers are those a spreadsheet shows: the header is row 1, the first data row is row 2 (a quoted
value spanning lines is still one row). Cells are stripped of surrounding blanks; a blank cell of an
optional column means "not given".
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Final, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from hub.catalog.values import (
    Interval,
    check_currency,
    check_time_zone,
    decimal_text,
    format_day,
    money_text,
    normalise_gtin,
    parse_day,
)
from hub.csvcells import spreadsheet_safe_row, unneutralise
from hub.errors import HubError
from storegate.wire import DeviceId, StoreId, check_sku_id

# More errors than this are counted but not listed: a wrong file would otherwise answer megabytes.
MAX_LISTED_ERRORS: Final = 1000

# The retailer's own code, safe as one URL path segment (storegate.wire.check_sku_id); cells are stripped.
SkuId = Annotated[str, Field(min_length=1, max_length=63), AfterValidator(check_sku_id)]
Name = Annotated[str, Field(min_length=1, max_length=256)]
Gtin = Annotated[str, AfterValidator(normalise_gtin)]
Currency = Annotated[str, AfterValidator(check_currency)]


def _time_zone_name(name: str) -> str:
    check_time_zone(name)
    return name


TimeZoneName = Annotated[str, Field(max_length=64), AfterValidator(_time_zone_name)]
DayHours = Annotated[
    tuple[Interval, ...],
    BeforeValidator(parse_day),
    PlainSerializer(format_day, return_type=str, when_used="json"),
]
PlainDecimal = PlainSerializer(decimal_text, return_type=str, when_used="json")


class CatalogRow(BaseModel):
    """Base of the row models: unknown fields are an error, rows are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SkuRow(CatalogRow):
    """One line of ``skus.csv``: an article the retailer sells."""

    sku_id: SkuId
    gtin: Gtin | None = Field(default=None, description="GTIN-8/12/13/14 with a valid check digit; kept as GTIN-14")
    name: Name
    unit_weight_g: Annotated[Decimal, PlainDecimal] | None = Field(
        default=None, gt=0, max_digits=10, decimal_places=3, description="net weight of one unit, grams"
    )
    pack_size: int = Field(default=1, ge=1, le=1_000_000, description="units per pack as received")
    price: Decimal = Field(ge=0, max_digits=12, decimal_places=4, description="price of one unit")
    currency: Currency

    @field_serializer("price", when_used="json")
    def _price_text(self, price: Decimal) -> str:
        return money_text(price, self.currency)


class StoreRow(CatalogRow):
    """One line of ``stores.csv``: a store's profile and its weekly opening hours in local time."""

    store_id: StoreId
    name: Name
    timezone: TimeZoneName
    currency: Currency
    mon: DayHours
    tue: DayHours
    wed: DayHours
    thu: DayHours
    fri: DayHours
    sat: DayHours
    sun: DayHours
    # Optional and last, so store files written before coordinates existed still import.
    latitude: float | None = Field(
        default=None, ge=-90, le=90, allow_inf_nan=False, description="WGS 84 decimal degrees, north positive"
    )
    longitude: float | None = Field(
        default=None,
        ge=-180,
        le=180,
        allow_inf_nan=False,
        validate_default=True,  # so a latitude without a longitude is caught here
        description="WGS 84 decimal degrees, east positive",
    )

    # Optional and last: the region operators may be scoped to (docs/security.md); blank: none.
    region: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="region id"
    )

    @field_validator("region", mode="before")
    @classmethod
    def _blank_region(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("longitude")
    @classmethod
    def _both_or_neither(cls, value: float | None, info: ValidationInfo) -> float | None:
        if "latitude" not in info.data:
            return value  # the latitude is wrong itself and reported on its own column
        latitude = info.data["latitude"]
        if latitude is not None and value is None:
            raise ValueError(f"latitude {latitude:g} has no longitude: give both or neither")
        if latitude is None and value is not None:
            raise ValueError(f"longitude {value:g} has no latitude: give both or neither")
        return value

    @property
    def days(self) -> tuple[tuple[Interval, ...], ...]:
        """The seven days, Monday first."""
        return (self.mon, self.tue, self.wed, self.thu, self.fri, self.sat, self.sun)


class SlotRow(CatalogRow):
    """One line of ``planogram.csv``: a slot of a shelf and the SKU it holds."""

    store_id: StoreId
    shelf_id: DeviceId = Field(description="the shelf's device id, as in its shelf.* events")
    slot: int = Field(ge=1, le=255, description="slot number on the shelf, as in shelf.* events")
    sku_id: SkuId
    capacity: int = Field(ge=1, le=1_000_000, description="units the slot holds when full")
    min_quantity: int = Field(ge=0, description="minimum facings: below this the slot needs a restock")
    camera_id: DeviceId | None = Field(
        default=None, description="the camera watching the slot (its device id); blank or left out: none"
    )

    @field_validator("min_quantity")
    @classmethod
    def _within_capacity(cls, value: int, info: ValidationInfo) -> int:
        capacity = info.data.get("capacity")
        if capacity is not None and value > capacity:
            raise ValueError(f"minimum {value} is more than the capacity {capacity}")
        return value


# Quantities are PostgreSQL INTEGER columns; a billion units is past any store's room.
MAX_UNITS: Final = 1_000_000_000
MAX_LEAD_TIME_DAYS: Final = 365


class StockPolicyRow(CatalogRow):
    """One line of ``stock_policies.csv``: the min/max rules of one SKU in one store."""

    store_id: StoreId
    sku_id: SkuId
    max_stock: int = Field(ge=0, le=MAX_UNITS, description="the most the store has room for; orders never pass it")
    reorder_point: int | None = Field(
        default=None, ge=0, description="order at or below this; blank: lead-time forecast + safety stock"
    )
    lead_time_days: int = Field(default=0, ge=0, le=MAX_LEAD_TIME_DAYS, description="days from order to delivery")
    safety_stock: int = Field(default=0, ge=0, le=MAX_UNITS, description="units kept on top of lead-time demand")
    on_order: int = Field(default=0, ge=0, le=MAX_UNITS, description="units ordered and not yet received")

    @field_validator("reorder_point")
    @classmethod
    def _below_max(cls, value: int | None, info: ValidationInfo) -> int | None:
        max_stock = info.data.get("max_stock")
        if value is not None and max_stock is not None and value >= max_stock:
            raise ValueError(f"reorder point {value} must be below max_stock {max_stock}")
        return value


R = TypeVar("R", bound=CatalogRow)


@dataclass(frozen=True, slots=True, kw_only=True)
class RowError:
    """What is wrong with one row (1 is the header) and, when it is one column's fault, which column."""

    row: int
    column: str | None
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.message}"


class CsvRowsError(HubError, ValueError):
    """A CSV file with bad rows; ``errors`` lists them (at most MAX_LISTED_ERRORS), ``count`` counts all."""

    def __init__(self, errors: Sequence[RowError], *, count: int | None = None) -> None:
        self.errors = tuple(errors[:MAX_LISTED_ERRORS])
        self.count = len(errors) if count is None else count
        more = f" (and {self.count - len(self.errors)} more)" if self.count > len(self.errors) else ""
        super().__init__("; ".join(str(e) for e in self.errors[:20]) + more)


@dataclass(frozen=True, slots=True, kw_only=True)
class CsvFormat(Generic[R]):
    """One kind of catalog CSV: its row model and the columns that identify a row."""

    name: str
    model: type[R]
    key: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column, in the order files are written."""
        return tuple(self.model.model_fields)

    @property
    def required_columns(self) -> frozenset[str]:
        """Columns the header must have (the others may be left out)."""
        return frozenset(name for name, field in self.model.model_fields.items() if field.is_required())

    def key_of(self, row: R) -> tuple[Any, ...]:
        """The values that identify ``row``."""
        return tuple(getattr(row, column) for column in self.key)


SKUS: Final = CsvFormat(name="skus", model=SkuRow, key=("sku_id",))
STORES: Final = CsvFormat(name="stores", model=StoreRow, key=("store_id",))
PLANOGRAM: Final = CsvFormat(name="planogram", model=SlotRow, key=("store_id", "shelf_id", "slot"))
STOCK_POLICIES: Final = CsvFormat(name="stock_policies", model=StockPolicyRow, key=("store_id", "sku_id"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedRow(Generic[R]):
    """A valid row and where it was in the file."""

    row: int
    value: R


def decode_csv(body: bytes) -> str:
    """The text of an uploaded file: UTF-8, a byte-order mark dropped; CsvRowsError names the bad row."""
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        row = body[: err.start].count(b"\n") + 1
        raise CsvRowsError([RowError(row=row, column=None, message=f"not UTF-8 (byte {err.start})")]) from err


def header_of(text: str) -> tuple[str, ...]:
    """The column names of a CSV text's header, stripped (empty for an empty or unreadable file)."""
    try:
        return tuple(name.strip() for name in next(csv.reader(io.StringIO(text, newline=""), strict=True)))
    except (StopIteration, csv.Error):
        return ()


def _header_errors(header: list[str], fmt: CsvFormat[Any]) -> list[RowError]:
    errors = []
    seen: set[str] = set()
    for name in header:
        if name in seen:
            errors.append(RowError(row=1, column=name, message="column appears twice"))
        elif name not in fmt.columns:
            expected = ", ".join(fmt.columns)
            errors.append(RowError(row=1, column=name or "(blank)", message=f"unknown column; columns are {expected}"))
        seen.add(name)
    errors.extend(
        RowError(row=1, column=name, message="required column is missing")
        for name in fmt.columns
        if name in fmt.required_columns and name not in seen
    )
    return errors


def _message(error: Any, given: dict[str, str | None]) -> tuple[str | None, str]:
    column = str(error["loc"][0]) if error["loc"] else None
    if column is not None and given.get(column) is None and error["type"] != "value_error":
        return column, "a value is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    return column, message


def parse_csv(text: str, fmt: CsvFormat[R]) -> list[ParsedRow[R]]:
    """Every row of ``text`` validated; CsvRowsError with every bad row and column if any is wrong."""
    rows, errors = read_csv(text, fmt)
    if errors:
        raise CsvRowsError(errors)
    return rows


def read_csv(text: str, fmt: CsvFormat[R]) -> tuple[list[ParsedRow[R]], list[RowError]]:
    """The valid rows of ``text`` and the errors of the others; CsvRowsError when the header is wrong.

    Two rows with the same key are an error too (the second names the first): an import applies a
    file as a whole, and a key given twice would make it depend on row order.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    errors: list[RowError] = []
    parsed: list[ParsedRow[R]] = []
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise CsvRowsError([RowError(row=1, column=None, message="the file is empty; it needs a header")]) from None
    except csv.Error as err:
        raise CsvRowsError([RowError(row=1, column=None, message=f"unreadable CSV: {err}")]) from err
    errors.extend(_header_errors(header, fmt))
    if errors:
        raise CsvRowsError(errors)
    defaults = {name for name in fmt.columns if name not in fmt.required_columns}
    first_row_of: dict[tuple[Any, ...], int] = {}
    row_number = 1
    while True:
        row_number += 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            errors.append(RowError(row=row_number, column=None, message=f"unreadable CSV: {err}"))
            break  # the reader cannot resynchronise after a broken quote
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        if len(cells) != len(header):
            message = f"{len(cells)} values for {len(header)} columns"
            errors.append(RowError(row=row_number, column=None, message=message))
            continue
        # unneutralise: a file this hub exported (formula-like cells behind an apostrophe) imports unchanged.
        given = {name: (unneutralise(cell.strip()) or None) for name, cell in zip(header, cells, strict=True)}
        data = {name: value for name, value in given.items() if value is not None or name not in defaults}
        try:
            value = fmt.model.model_validate(data)
        except ValidationError as err:
            for error in err.errors(include_url=False):
                column, message = _message(error, given)
                errors.append(RowError(row=row_number, column=column, message=message))
            continue
        key = fmt.key_of(value)
        if key in first_row_of:
            message = f"{' / '.join(map(str, key))} is already on row {first_row_of[key]}"
            errors.append(RowError(row=row_number, column=fmt.key[-1], message=message))
            continue
        first_row_of[key] = row_number
        parsed.append(ParsedRow(row=row_number, value=value))
    return parsed, errors


def write_csv(fmt: CsvFormat[R], rows: Iterable[R]) -> str:
    """The CSV text of ``rows``, every column, with a header; ``parse_csv`` reads back the same rows."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(fmt.columns)
    for row in rows:
        values = row.model_dump(mode="json")
        writer.writerow(
            spreadsheet_safe_row("" if values[column] is None else values[column] for column in fmt.columns)
        )
    return out.getvalue()
