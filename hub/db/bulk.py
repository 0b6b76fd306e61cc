"""Many rows into one table with one prepared statement, at the driver's speed, on SQLite and PostgreSQL.

SQLAlchemy's executemany of dictionaries costs more per row than the database does; the ingest path
writes thousands of rows per unit, so it hands the driver plain tuples instead, as the event log does:
on SQLite ``executemany`` of one prepared statement (SQLite's C loop), on PostgreSQL one statement
taking all the rows as one JSON array (one round trip, serialised by pydantic-core in one call).
Values are converted the way the models' types would: aware datetimes to SQLite's naive-UTC text,
decimals to SQLite's floats.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Select, and_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.dialect import UnsupportedDatabaseError
from hub.db.engine import json_text

_ZERO: Final = timedelta(0)
# PostgreSQL array types of the column kinds the hub writes in bulk.
PG_TYPES: Final = frozenset({"varchar", "text", "int", "bigint", "timestamptz", "numeric", "json", "boolean"})


@dataclass(frozen=True, slots=True)
class BulkColumn:
    """A column written in bulk and its PostgreSQL type (which also says how to convert for SQLite)."""

    name: str
    pg_type: str

    def __post_init__(self) -> None:
        if self.pg_type not in PG_TYPES:
            raise ValueError(f"no bulk conversion for {self.pg_type}")


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """``items`` in slices of at most ``size``: lookups by key stay under the databases' parameter limits."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# The text of each second converted lately ("2025-03-03 09:00:00."), so that a time costs a dict look-up and a
# join: datetime.isoformat formats with a C printf that cost 1.4 us a call, twice an event (the event and its
# ledger row), while a unit's times fall in a few thousand seconds. Bounded: emptied when full.
_SECOND_TEXTS_MAX: Final = 8192
_second_texts: dict[tuple[int, int, int, int, int, int], str] = {}


def sqlite_time(value: datetime) -> str:
    """The text SQLAlchemy's SQLite DATETIME writes: naive UTC with microseconds (text order is time order)."""
    # pydantic's parsed times carry its own UTC tzinfo: a zero offset needs no conversion.
    if value.tzinfo is not UTC and value.utcoffset() != _ZERO:
        value = value.astimezone(UTC)
    second = (value.year, value.month, value.day, value.hour, value.minute, value.second)
    text = _second_texts.get(second)
    if text is None:
        if len(_second_texts) >= _SECOND_TEXTS_MAX:
            _second_texts.clear()
        text = _second_texts[second] = value.replace(tzinfo=None, microsecond=0).isoformat(" ") + "."
    return text + str(1_000_000 + value.microsecond)[1:]


def _sqlite_decimal(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


_SQLITE_CONVERSIONS: Final = {"timestamptz": sqlite_time, "numeric": _sqlite_decimal}


def _for_sqlite(columns: Sequence[BulkColumn], rows: Sequence[tuple[Any, ...]]) -> Sequence[tuple[Any, ...]]:
    """``rows`` with the values SQLite's column types need; only the columns that need it are touched."""
    converting = [
        (n, _SQLITE_CONVERSIONS[column.pg_type])
        for n, column in enumerate(columns)
        if column.pg_type in _SQLITE_CONVERSIONS
    ]
    if not converting:
        return rows
    # Column by column: each distinct value converted once (many rows of a call share the unit's "now", a
    # store's time of a reading), the rest done by C loops (zip, set, map) rather than a Python loop over
    # every value of every row.
    values_of = list(zip(*rows, strict=True))
    for n, convert in converting:
        column = values_of[n]
        converted = {value: convert(value) for value in set(column) if value is not None}
        converted[None] = None
        values_of[n] = tuple(map(converted.__getitem__, column))
    return list(zip(*values_of, strict=True))  # the driver API takes tuples


async def bulk_write(
    session: AsyncSession,
    table: str,
    columns: Sequence[BulkColumn],
    rows: Sequence[tuple[Any, ...]],
    *,
    on_conflict: str = "",
) -> None:
    """``INSERT INTO table (columns) <rows> <on_conflict>`` in the session's transaction.

    ``on_conflict`` is the same SQL on both databases, e.g. ``ON CONFLICT (event_id, line) DO NOTHING`` or
    ``ON CONFLICT (store_id, sku_id) DO UPDATE SET on_hand = excluded.on_hand``.
    """
    if not rows:
        return
    names = ", ".join(column.name for column in columns)
    connection = await session.connection()
    dialect = connection.dialect.name
    if dialect == "sqlite":
        marks = ", ".join("?" for _ in columns)
        converted = _for_sqlite(columns, rows)
        # Table, column names and the conflict clause are the hub's own constants, never input.
        sql = f"INSERT INTO {table} ({names}) VALUES ({marks}) {on_conflict}"  # noqa: S608
        await connection.exec_driver_sql(sql, converted)
    elif dialect == "postgresql":
        # The rows as one JSON array that the server takes apart (json_array_elements keeps their order), each
        # value read as text and cast to its column's type, as the event log's insert does: one pydantic-core
        # call serialises them all, where asyncpg's executemany encoded each row in the driver (the ledger and
        # positions' 8 % of the hub's CPU in bench/hub_ingest.py, docs/benchmarks.md, third round). One
        # statement, so the rows must not share a key of a DO UPDATE clause (PostgreSQL updates a row once per
        # statement); DO NOTHING skips a repeat as before. Times are aware, as everywhere in the hub.
        values = ", ".join(f"(row->>{n})::{column.pg_type}" for n, column in enumerate(columns))
        sql = (
            f"INSERT INTO {table} ({names}) SELECT {values} "  # noqa: S608 - the hub's own constants, never input
            f"FROM json_array_elements($1::json) AS rows(row) {on_conflict}"
        )
        await connection.exec_driver_sql(sql, (json_text(list(rows)),))
    else:
        raise UnsupportedDatabaseError(f"the hub supports SQLite and PostgreSQL, not {dialect}")


def select_by_keys(
    dialect: str, columns: Sequence[Any], key_columns: Sequence[Any], keys: Sequence[tuple[Any, ...]]
) -> Iterable[Select[Any]]:
    """SELECTs of ``columns`` (or an entity) for the rows whose ``key_columns`` hold one of ``keys``.

    One statement joining the table with the wanted keys, which both databases answer with an index
    look-up per key whatever the table's size, and whose SQL does not depend on the keys (SQLAlchemy
    compiles it once). The obvious ``(a, b) IN ((?, ?), ...)`` is neither: SQLite scans the whole table
    for a row-value IN list, and PostgreSQL keeps for the prepared statement a plan chosen while the
    table was small (a sequential scan filtered by hundreds of OR'd pairs).

    PostgreSQL: ``unnest`` of one array per key column. SQLite: ``json_each`` of one JSON array of the
    keys (keys are text and integers, which JSON keeps as they are).
    """
    if not keys:
        return
    if dialect == "postgresql":
        arrays = [
            bindparam(f"keys_{n}", [key[n] for key in keys], type_=ARRAY(c.type)) for n, c in enumerate(key_columns)
        ]
        wanted = func.unnest(*arrays).table_valued(*(c.key for c in key_columns)).render_derived(name="wanted")
        yield select(*columns).join(wanted, and_(*(c == wanted.c[c.key] for c in key_columns)))
        return
    listed = func.json_each(bindparam("keys", json.dumps([list(key) for key in keys]))).table_valued("value")
    on = and_(*(c == func.json_extract(listed.c.value, f"$[{n}]") for n, c in enumerate(key_columns)))
    yield select(*columns).join(listed, on)
