"""Checks of query parameters that FastAPI's own validation does not make, as 422s naming the parameter."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Final

from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator

from hub.api.listings import Cursor, CursorError, Order

_NUMBER: Final = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _not_a_number(value: object) -> object:
    """Refuse a number where a date or time is due: pydantic would take ``0.5`` as seconds since 1970, which no
    client means, and which the OpenAPI document (format date-time) says is not one."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
        raise ValueError("give a date in ISO 8601 (e.g. 2025-01-31 or 2025-01-31T12:00:00Z), not a number")
    return value


# A date-time or a date of a query or path parameter, written as ISO 8601 and never as a number.
IsoDatetime = Annotated[datetime, BeforeValidator(_not_a_number)]
IsoDate = Annotated[date, BeforeValidator(_not_a_number)]


def invalid(parameter: str, message: str, value: object) -> RequestValidationError:
    """A 422 naming the query parameter, shaped like FastAPI's own validation errors."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", parameter), "msg": message, "input": value}]
    )


def aware(parameter: str, value: datetime | None) -> datetime | None:
    """``value`` if it carries a time zone; a 422 otherwise."""
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise invalid(
            parameter,
            f"{parameter} has no time zone; give one, e.g. 2025-01-31T12:00:00Z or 2025-01-31T13:00:00+01:00",
            value.isoformat(),
        )
    if value is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00: the database would refuse it with a 500
            raise invalid(parameter, f"{parameter} is outside the years 1 to 9999 in UTC", value.isoformat()) from None
    return value


def cursor_of(value: str | None, *, order: Order) -> Cursor | None:
    """The position a ``cursor`` parameter stands for; a 422 if this API did not hand it out for ``order``."""
    if value is None:
        return None
    try:
        return Cursor.decode(value, order=order)
    except CursorError as err:
        raise invalid("cursor", str(err), value) from None
