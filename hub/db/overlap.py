"""CPU work done while the database works on a statement, so the unit takes the longer of the two, not the sum.

The consumer's unit is a chain of statements, each awaited before the next; while one runs in
PostgreSQL's own process, the event loop has nothing to do. Pure work that does not need the statement's
result -- placing the unit's events in the catalog while their rows are inserted, evaluating the rules
while the ledger is written -- can run then. The session is used by the statement's task alone meanwhile:
``work`` must not touch it.

On SQLite the gain is small: its thread lets go of the GIL while it steps a row but needs it back to bind
the next, which it gets once per switch interval while ``work`` runs (measured in docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")


async def while_awaiting(awaitable: Awaitable[T], work: Callable[[], U]) -> tuple[T, U]:
    """Start ``awaitable``, run ``work`` while it waits on the database, and return both results.

    If ``work`` raises, the statement is still awaited (never left in flight on the session), and a
    database error it ended with is raised rather than ``work``'s: the consumer retries or holds the unit
    on a database error, and the transaction is no use after one anyway.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        await asyncio.sleep(0)  # one turn of the loop: the task sends its statement and waits for the reply
    except asyncio.CancelledError:
        task.cancel()
        raise
    try:
        done = work()
    except Exception as work_error:
        await asyncio.gather(task, return_exceptions=True)
        if not task.cancelled() and (database_error := task.exception()) is not None:
            raise database_error from work_error
        raise
    return await task, done
