"""Look-ups by composite key stay index look-ups however large the table grows, on both databases; the values
written to SQLite are the text and numbers SQLAlchemy's column types would write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pydantic
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.db import bulk
from hub.db.bulk import BulkColumn, bulk_write, select_by_keys, sqlite_time
from hub.db.engine import session_factory
from hub.inventory.models import StockPosition

AT = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
POSITION_COLUMNS = tuple(
    BulkColumn(name, pg_type)
    for name, pg_type in (
        ("store_id", "varchar"),
        ("sku_id", "varchar"),
        ("on_hand", "int"),
        ("last_movement_at", "timestamptz"),
        ("updated_at", "timestamptz"),
    )
)


async def test_positions_are_found_by_store_and_sku_among_many(engine: AsyncEngine) -> None:
    rows = [(f"store-{s:03d}", f"sku-{k:04d}", s * 10_000 + k, AT, AT) for s in range(20) for k in range(500)]
    wanted = [(f"store-{s:03d}", f"sku-{k:04d}") for s in (3, 7, 19) for k in range(0, 500, 2)]  # 750 keys
    wanted += [("store-003", "no-such-sku"), ("no-such-store", "sku-0001")]
    p = StockPosition
    async with session_factory(engine)() as session, session.begin():
        await bulk_write(session, "stock_positions", POSITION_COLUMNS, rows)
        found: dict[tuple[str, str], int] = {}
        queries = list(
            select_by_keys(engine.dialect.name, (p.store_id, p.sku_id, p.on_hand), (p.store_id, p.sku_id), wanted)
        )
        for query in queries:
            found.update({(store, sku): on_hand for store, sku, on_hand in await session.execute(query)})

    assert found == {(store, sku): int(store[-3:]) * 10_000 + int(sku[-4:]) for store, sku in wanted[:750]}
    assert len(queries) == 1  # the keys are one parameter: one statement, compiled once


async def test_sqlite_answers_a_key_look_up_from_the_primary_key_index_not_a_scan(sqlite_url: str) -> None:
    from hub.db.engine import create_engine

    engine = create_engine(sqlite_url)
    try:
        p = StockPosition
        (query,) = select_by_keys("sqlite", (p.on_hand,), (p.store_id, p.sku_id), [("store-001", "sku-0001")])
        compiled = query.compile(engine.sync_engine, compile_kwargs={"literal_binds": True})
        async with engine.connect() as connection:
            plan = [row[-1] for row in await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
    finally:
        await engine.dispose()
    # A row-value "(store_id, sku_id) IN (...)" list is a "SCAN stock_positions": the whole table per look-up.
    assert any(step.startswith("SEARCH stock_positions USING") for step in plan), plan
    assert not any(step.startswith("SCAN stock_positions") for step in plan), plan


def _reference_time(value: datetime) -> str:
    # What SQLAlchemy's SQLite DATETIME stores for the hub's aware times: naive UTC, always six digits of a second.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones() | st.just(UTC))
)
def test_a_time_is_written_as_naive_utc_text_with_microseconds(value: datetime) -> None:
    assert sqlite_time(value) == _reference_time(value)
    assert sqlite_time(value) == _reference_time(value)  # the second time from the text of its second


def test_a_time_parsed_by_pydantic_or_with_an_offset_is_written_in_utc() -> None:
    parsed = pydantic.TypeAdapter(datetime).validate_python("2025-03-03T09:00:00.5+00:00")
    offset = datetime(2025, 3, 3, 10, 0, 0, 7, tzinfo=timezone(timedelta(hours=1)))
    assert type(parsed.tzinfo) is not type(UTC)
    assert sqlite_time(parsed) == "2025-03-03 09:00:00.500000"
    assert sqlite_time(offset) == "2025-03-03 09:00:00.000007"


def test_the_texts_of_seconds_kept_are_bounded() -> None:
    start = datetime(2025, 3, 3, tzinfo=UTC)
    for n in range(bulk._SECOND_TEXTS_MAX + 10):
        value = start + timedelta(seconds=n, microseconds=n)
        assert sqlite_time(value) == _reference_time(value)
    assert 0 < len(bulk._second_texts) <= bulk._SECOND_TEXTS_MAX


def test_rows_for_sqlite_convert_times_and_decimals_and_nothing_else() -> None:
    columns = (BulkColumn("a", "varchar"), BulkColumn("at", "timestamptz"), BulkColumn("price", "numeric"))
    rows: list[tuple[Any, ...]] = [
        ("x", AT, Decimal("2.10")),
        ("y", AT + timedelta(microseconds=1), None),
        ("z", None, 3),
        ("x", AT.astimezone(timezone(timedelta(hours=-5))), Decimal("0.0001")),
    ]
    assert bulk._for_sqlite(columns, rows) == [
        ("x", "2025-03-03 09:00:00.000000", 2.1),
        ("y", "2025-03-03 09:00:00.000001", None),
        ("z", None, 3),
        ("x", "2025-03-03 09:00:00.000000", 0.0001),
    ]
    assert all(type(row) is tuple for row in bulk._for_sqlite(columns, rows))
    text_only = (BulkColumn("a", "varchar"),)
    assert bulk._for_sqlite(text_only, [("x",)]) == [("x",)]
