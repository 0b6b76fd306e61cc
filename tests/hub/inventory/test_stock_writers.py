"""Two writers of one store's stock at once on PostgreSQL: an API process's manual movement and a worker's unit.

Positions are read, worked out in Python and written back; without the store's lock (hub.db.store_locks) the
second transaction would start from the position before the first one's commit, and its write would undo the
first one's delta.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.db.engine import create_engine, session_factory
from hub.domain.ledger import Movement, MovementKind
from hub.inventory.apply import apply_movements
from hub.inventory.models import StockPosition
from tests.conftest import eventually

STORE = "store-0001"
SKU = "SKU-1"
AT = datetime(2025, 3, 3, 9, tzinfo=UTC)


@pytest.fixture
async def pg_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url)
    yield engine
    await engine.dispose()


def _receipt(event_id: str, quantity: int, minute: int) -> Movement:
    at = AT.replace(minute=minute)
    return Movement(event_id, 0, STORE, SKU, MovementKind.RECEIPT, quantity, at)


async def _waiting_on_a_lock(engine: AsyncEngine, backend_pid: int) -> bool:
    async with engine.connect() as connection:
        state: str | None = await connection.scalar(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": backend_pid}
        )
    return state == "Lock"


async def test_a_second_writer_waits_for_the_first_and_no_delta_is_lost(pg_engine: AsyncEngine) -> None:
    sessions = session_factory(pg_engine)
    now = AT.replace(hour=10)
    async with sessions() as first, first.begin():
        await apply_movements(first, [_receipt("e-1", 5, 1)], now=now)  # first's transaction stays open
        async with sessions() as second, second.begin():
            pid = await second.scalar(text("SELECT pg_backend_pid()"))
            assert isinstance(pid, int)
            writing = asyncio.create_task(apply_movements(second, [_receipt("e-2", 3, 2)], now=now, actor="ops-alice"))
            await eventually(lambda: _waiting_on_a_lock(pg_engine, pid), timeout=10, what="the second writer waits")
            assert not writing.done()
            await first.commit()
            await asyncio.wait_for(writing, timeout=10)
    async with sessions() as reader:
        on_hand = await reader.scalar(
            select(StockPosition.on_hand).where(StockPosition.store_id == STORE, StockPosition.sku_id == SKU)
        )
    assert on_hand == 8  # 5 + 3: without the lock the second write would have left 3
