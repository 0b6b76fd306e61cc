"""Time-zone arithmetic in SQL on both databases: native on PostgreSQL, Python functions on SQLite.

SQLite knows no time zones. Every SQLite connection of the hub gets two deterministic functions
(:func:`register_sqlite_functions`, called by the engine's connect hook):

- ``storegate_local(utc_text, tz_name)``: a UTC instant as :class:`~hub.db.models.UtcDateTime` stores it on
  SQLite (naive text, ``YYYY-MM-DD HH:MM:SS.ffffff``) as the wall-clock time of an IANA zone,
  ``YYYY-MM-DD HH:MM:SS``, by :mod:`zoneinfo`, daylight saving time included;
- ``storegate_epoch(utc_text)``: the same instant as seconds since 1970-01-01 UTC.

The SQLAlchemy constructs :class:`local_timestamp` and :class:`seconds_between` compile to those on SQLite
and to ``timezone()``/``EXTRACT(EPOCH ...)`` on PostgreSQL, so one query bucketing by local hour or date
runs in the database on both, with the same text results.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import Float, String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

LOCAL_FUNCTION: Final = "storegate_local"
EPOCH_FUNCTION: Final = "storegate_epoch"
# What local_timestamp() yields on both databases; reports cut dates and hours out of it by position.
LOCAL_TEXT_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
_POSTGRES_LOCAL_FORMAT: Final = "YYYY-MM-DD HH24:MI:SS"


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _utc(utc_text: str) -> datetime:
    """The instant of a stored timestamp: naive text is UTC (UtcDateTime); an offset, if any, is honoured."""
    value = datetime.fromisoformat(utc_text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def local_wall_time(utc_text: str | None, tz_name: str | None) -> str | None:
    """``storegate_local``: the wall-clock time in ``tz_name`` of a stored UTC instant; NULL in, NULL out.

    An unknown zone raises (SQLite reports it as an error of the statement): a report in the wrong
    zone would be silently wrong, and store profiles only hold zones the catalog checked.
    """
    if utc_text is None or tz_name is None:
        return None
    return _utc(utc_text).astimezone(_zone(tz_name)).strftime(LOCAL_TEXT_FORMAT)


def epoch_seconds(utc_text: str | None) -> float | None:
    """``storegate_epoch``: seconds since 1970-01-01 UTC of a stored UTC instant; NULL in, NULL out."""
    if utc_text is None:
        return None
    return _utc(utc_text).timestamp()


def register_sqlite_functions(dbapi_connection: Any) -> None:
    """Create the hub's SQL functions on a SQLite DB-API connection (sqlite3, or SQLAlchemy's aiosqlite adapter)."""
    dbapi_connection.create_function(LOCAL_FUNCTION, 2, local_wall_time, deterministic=True)
    dbapi_connection.create_function(EPOCH_FUNCTION, 1, epoch_seconds, deterministic=True)


class local_timestamp(FunctionElement[str]):
    """``local_timestamp(utc_column, tz_name)``: text ``YYYY-MM-DD HH:MM:SS``, the wall clock of the zone."""

    type = String()
    name = "local_timestamp"
    inherit_cache = True


class seconds_between(FunctionElement[float]):
    """``seconds_between(earlier, later)``: ``later - earlier`` in seconds (float); NULL if either is NULL."""

    type = Float()
    name = "seconds_between"
    inherit_cache = True


def _arguments(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> list[str]:
    return [compiler.process(argument, **kw) for argument in element.clauses]


@compiles(local_timestamp, "postgresql")
def _local_timestamp_postgresql(element: local_timestamp, compiler: SQLCompiler, **kw: Any) -> str:
    at, zone = _arguments(element, compiler, **kw)
    # timezone(zone, timestamptz) is the zone's wall clock; PostgreSQL's own tz database, DST included.
    return f"to_char(timezone({zone}, {at}), '{_POSTGRES_LOCAL_FORMAT}')"


@compiles(local_timestamp, "sqlite")
def _local_timestamp_sqlite(element: local_timestamp, compiler: SQLCompiler, **kw: Any) -> str:
    at, zone = _arguments(element, compiler, **kw)
    return f"{LOCAL_FUNCTION}({at}, {zone})"


@compiles(seconds_between, "postgresql")
def _seconds_between_postgresql(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    earlier, later = _arguments(element, compiler, **kw)
    return f"CAST(EXTRACT(EPOCH FROM ({later} - {earlier})) AS DOUBLE PRECISION)"


@compiles(seconds_between, "sqlite")
def _seconds_between_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    earlier, later = _arguments(element, compiler, **kw)
    return f"({EPOCH_FUNCTION}({later}) - {EPOCH_FUNCTION}({earlier}))"
