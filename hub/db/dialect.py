"""What differs between the hub's two databases in a write: the upsert construct, and a portable GREATEST.

The hub runs on SQLite and PostgreSQL alike. Both have ``INSERT ... ON CONFLICT``, but SQLAlchemy builds
it from each dialect's own ``insert``; :func:`dialect_insert` picks the session's. Any other database is
refused with :class:`UnsupportedDatabaseError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final, TypeVar

from sqlalchemy import ColumnElement, case
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from hub.errors import HubError

T = TypeVar("T")

InsertFactory = Callable[[Any], sqlite.Insert | postgresql.Insert]
_INSERT_OF_DIALECT: Final[dict[str, InsertFactory]] = {
    "sqlite": sqlite.insert,
    "postgresql": postgresql.insert,
}


class UnsupportedDatabaseError(HubError, RuntimeError):
    """A database for which the hub has no upsert statement."""


def of_dialect(session: AsyncSession, choices: Mapping[str, T]) -> T:
    """The choice for the session's database in ``choices`` (keyed by dialect name); refuses any other database."""
    dialect = session.get_bind().dialect.name
    try:
        return choices[dialect]
    except KeyError:
        raise UnsupportedDatabaseError(f"the hub supports SQLite and PostgreSQL, not {dialect}") from None


def dialect_insert(session: AsyncSession) -> InsertFactory:
    """The insert construct of the session's database, for upserts."""
    return of_dialect(session, _INSERT_OF_DIALECT)


def later(column: Any, value: datetime | ColumnElement[Any]) -> Any:
    """The later of a nullable timestamp column and ``value``, a time or a bound parameter: a portable GREATEST."""
    return case((column.is_(None), value), (column < value, value), else_=column)
