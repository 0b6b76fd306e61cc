"""Many rows into one table in one statement, at the driver's speed, on SQLite and PostgreSQL.

SQLAlchemy's executemany of dictionaries costs more per row than the database does; the ingest path
writes thousands of rows per unit, so it hands the driver plain tuples instead, as the event log does:
SQLite's ``executemany`` (a C loop over one prepared statement) and PostgreSQL's ``unnest`` of one
array per column (one statement, one round trip). Values are converted the way the models' types
would: aware datetimes to SQLite's naive-UTC text, decimals to SQLite's floats.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from hub.storage import UnsupportedDatabaseError

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


def sqlite_time(value: datetime) -> str:
    """The text SQLAlchemy's SQLite DATETIME writes: naive UTC with microseconds (text order is time order)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_value(value: Any, pg_type: str) -> Any:
    if value is None:
        return None
    if pg_type == "timestamptz":
        return sqlite_time(value)
    if pg_type == "numeric" and isinstance(value, Decimal):
        return float(value)
    return value


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
    ``ON CONFLICT (store_id, sku_id) DO UPDATE SET on_hand = excluded.on_hand``. Rows must not repeat a
    conflict key within one call (PostgreSQL refuses to update a row twice in one statement).
    """
    if not rows:
        return
    names = ", ".join(column.name for column in columns)
    connection = await session.connection()
    dialect = connection.dialect.name
    if dialect == "sqlite":
        marks = ", ".join("?" for _ in columns)
        types = [column.pg_type for column in columns]
        converted = [tuple(_sqlite_value(v, t) for v, t in zip(row, types, strict=True)) for row in rows]
        # Table, column names and the conflict clause are the hub's own constants, never input.
        sql = f"INSERT INTO {table} ({names}) VALUES ({marks}) {on_conflict}"  # noqa: S608
        await connection.exec_driver_sql(sql, converted)
    elif dialect == "postgresql":
        arrays = ", ".join(f"${n}::{column.pg_type}[]" for n, column in enumerate(columns, start=1))
        by_column = tuple(list(values) for values in zip(*rows, strict=True))
        sql = f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) {on_conflict}"  # noqa: S608
        await connection.exec_driver_sql(sql, by_column)
    else:
        raise UnsupportedDatabaseError(f"the hub supports SQLite and PostgreSQL, not {dialect}")
