"""The ranges of the hub's integer columns, once, for request models, parameters and derived values.

SQL ``INTEGER`` is 32 bits on PostgreSQL (and what the models declare as ``Integer``), ``BIGINT`` 64 bits; SQLite
holds 64 bits in either. A number past its column is refused where it comes in (a 422, or ``invalid`` on MQTT,
see ``storegate.wire``) and a sum that would pass it is refused before it is written: neither reaches the
database as an overflow that fails the request or the consumer's unit with a 500 or a storage error.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field

from storegate import wire

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = wire.INT32_MAX
INT64_MAX: Final = wire.INT64_MAX

# A value of an INTEGER column, signed.
DbInt = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]
# Items or units in an INTEGER column that cannot be negative.
DbCount = Annotated[int, Field(ge=0, le=INT32_MAX)]
# A row id (BIGINT on PostgreSQL, SQLite's 64-bit rowid), e.g. a paging cursor.
RowId = Annotated[int, Field(ge=1, le=INT64_MAX)]


def fits_int32(value: int) -> bool:
    """Whether ``value`` fits an INTEGER column."""
    return INT32_MIN <= value <= INT32_MAX
