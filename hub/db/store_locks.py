"""A store's PostgreSQL advisory lock: every writer of a store's stock takes it (docs/scaling.md).

Stock positions are read, worked out in Python and written back, so two transactions applying movements of the
same store at once would each start from the position before the other's: one delta lost. The consumer (one
hub process or N workers) and the API's manual movements all take the store's transaction lock first, in one
order (sorted keys), so one waits for the other's commit and reads what it wrote. Re-entrant: a worker's unit
that holds its stores' locks already (:mod:`hub.ingest.shared`) takes them again at no cost. SQLite has one
writer at a time anyway (hub.db.writegate): nothing to take there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# unnest keeps the array's order, and the keys are sorted before they are sent: every unit, tick and API write
# takes its locks in the same order, so none waits for another that waits for it.
LOCK_STORES: Final = text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) AS t(k)")


def store_lock_key(store_id: str) -> int:
    """The advisory lock key of a store: 64 bits of a hash of its id (a collision only serialises two stores)."""
    digest = hashlib.blake2b(store_id.encode(), digest_size=8, person=b"sg-store").digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_order(store_ids: Iterable[str]) -> list[int]:
    """The lock keys of these stores, each once, in the order every writer takes them."""
    return sorted({store_lock_key(store_id) for store_id in store_ids})


async def lock_stores(session: AsyncSession, store_ids: Iterable[str]) -> None:
    """Wait for and take these stores' transaction locks (released by commit or rollback); PostgreSQL only."""
    keys = lock_order(store_ids)
    if keys:
        await session.execute(LOCK_STORES, {"keys": keys})


async def lock_stores_for_stock(session: AsyncSession, store_ids: Iterable[str]) -> None:
    """On PostgreSQL, :func:`lock_stores`; on SQLite nothing (one writer at a time already)."""
    if session.get_bind().dialect.name == "postgresql":
        await lock_stores(session, store_ids)
