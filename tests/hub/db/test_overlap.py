"""while_awaiting: pure work runs while a statement is in flight, and errors come out in the right order."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.db.overlap import while_awaiting


async def test_work_runs_while_the_statement_is_in_flight_and_both_results_come_back(engine: AsyncEngine) -> None:
    released = asyncio.Event()
    steps: list[str] = []

    async def statement() -> int:
        steps.append("sent")
        await released.wait()  # the database working
        async with engine.connect() as connection:
            value = int((await connection.execute(text("SELECT 41 + 1"))).scalar_one())
        steps.append("answered")
        return value

    def work() -> str:
        steps.append("work")
        released.set()
        return "placed"

    assert await while_awaiting(statement(), work) == (42, "placed")
    assert steps == ["sent", "work", "answered"]


async def test_a_failing_work_waits_for_the_statement_then_raises() -> None:
    finished = asyncio.Event()

    async def statement() -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        finished.set()

    def work() -> None:
        raise ValueError("a bug in the rules")

    with pytest.raises(ValueError, match="a bug in the rules"):
        await while_awaiting(statement(), work)
    assert finished.is_set()  # never left in flight on the session


async def test_a_database_error_comes_before_the_works_error(engine: AsyncEngine) -> None:
    async def statement() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT * FROM no_such_table"))

    def work() -> None:
        raise ValueError("a bug in the rules")

    with pytest.raises(DBAPIError) as raised:
        await while_awaiting(statement(), work)
    assert isinstance(raised.value.__cause__, ValueError)
