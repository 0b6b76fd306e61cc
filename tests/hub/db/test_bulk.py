"""Look-ups by composite key stay index look-ups however large the table grows, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from hub.db.bulk import BulkColumn, bulk_write, select_by_keys
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
