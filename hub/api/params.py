"""Checks of query parameters that FastAPI's own validation does not make, as 422s naming the parameter."""

from __future__ import annotations

from datetime import datetime

from fastapi.exceptions import RequestValidationError

from hub.api.listings import Cursor, CursorError


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
    return value


def cursor_of(value: str | None) -> Cursor | None:
    """The position a ``cursor`` parameter stands for; a 422 if this API did not hand it out."""
    if value is None:
        return None
    try:
        return Cursor.decode(value)
    except CursorError as err:
        raise invalid("cursor", str(err), value) from None
