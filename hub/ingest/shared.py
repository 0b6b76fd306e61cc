"""N hub workers on one MQTT v5 shared subscription: per-store locks and one leader (docs/scaling.md).

The broker hands each message to one worker of the group, so two workers may hold units of the same store at
once. Everything a unit does for a store (the stream marks, the ledger and stock, the rule states) is done
under that store's PostgreSQL advisory transaction lock, taken for all the unit's stores in one statement in
sorted key order (so two units never wait on each other in a circle) and released by the commit.

The work that must happen once for the whole hub (the rules ticker, the command publisher, the notification
senders) runs on one worker, the leader: the one holding a session advisory lock on a connection of its own.
When the leader dies its connection closes, PostgreSQL releases the lock, and another worker takes it at its
next try (within ``LEADER_RETRY_S``).

Nothing here is used by a single hub process (no shared group): it keeps its code path and its cost.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from typing import Final

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from hub.db.engine import describe_error
from hub.db.store_locks import lock_stores, store_lock_key
from hub.metrics import HubMetrics
from storegate.tasks import BackgroundTask

log = structlog.get_logger(__name__)

# The leader's session lock; any constant outside the store keys' use would do (those are hashes, this one too).
LEADER_LOCK_KEY: Final = int.from_bytes(
    hashlib.blake2b(b"storegate-hub-leader", digest_size=8).digest(), "big", signed=True
)
# Held while a hub process migrates the database at start: N processes started at once migrate one at a time.
STARTUP_LOCK_KEY: Final = int.from_bytes(
    hashlib.blake2b(b"storegate-hub-startup", digest_size=8).digest(), "big", signed=True
)
# How often a follower tries to become the leader, and the leader checks that its connection (its lock) holds.
LEADER_RETRY_S: Final = 1.0

# Each key tried in turn, in order; the keys taken come back.
_TRY_STORES: Final = text(
    "SELECT k FROM unnest(CAST(:keys AS bigint[])) WITH ORDINALITY AS t(k, n) WHERE pg_try_advisory_xact_lock(k) "
    "ORDER BY n"
)
_TRY_LEAD: Final = text("SELECT pg_try_advisory_lock(:key)")
_STILL_THERE: Final = text("SELECT 1")


@asynccontextmanager
async def startup_lock(database_url: str) -> AsyncIterator[None]:
    """On PostgreSQL, one hub process at a time in the block (its migrations); on SQLite, nothing to take."""
    if not database_url.startswith("postgresql"):
        yield
        return
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": STARTUP_LOCK_KEY})
            await connection.commit()
            try:
                yield
            finally:
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": STARTUP_LOCK_KEY})
                await connection.commit()
    finally:
        await engine.dispose()


class StoreLocks:
    """Takes the advisory transaction locks of a unit's stores (released by its commit or rollback)."""

    def __init__(self, *, metrics: HubMetrics, holder: str = "unit") -> None:
        self._wait = metrics.store_lock_wait_seconds.labels(holder=holder)
        self._busy = metrics.store_locks_busy

    async def __call__(self, session: AsyncSession, store_ids: Iterable[str]) -> None:
        """Wait for and take the locks of ``store_ids`` in ``session``'s transaction."""
        stores = set(store_ids)
        if not stores:
            return
        started = time.perf_counter()
        await lock_stores(session, stores)
        self._wait.observe(time.perf_counter() - started)

    async def take(self, session: AsyncSession, store_ids: Collection[str]) -> set[str]:
        """The stores of ``store_ids`` whose locks were free, now taken; if none was, wait for all of them.

        A unit goes on with the stores it could lock and leaves the others' messages for its next unit,
        rather than waiting while another worker's unit holds a store: with the broker dealing each gateway's
        batches round-robin, two workers' units nearly always share a store. Trying never waits, so it holds
        nothing anyone waits for in a circle; when every store is busy the unit waits, holding nothing yet.
        """
        if not store_ids:
            return set()
        by_key: dict[int, list[str]] = {}
        for store_id in store_ids:
            by_key.setdefault(store_lock_key(store_id), []).append(store_id)
        keys = sorted(by_key)
        taken = (await session.execute(_TRY_STORES, {"keys": keys})).scalars().all()
        if not taken:
            await self(session, store_ids)
            return set(store_ids)
        self._busy.inc(len(keys) - len(taken))
        return {store_id for key in taken for store_id in by_key[key]}


class Leadership:
    """Whether this worker is the leader: it holds a session advisory lock on a connection of its own.

    ``leading`` is read by the leader's tasks before each pass (the ticker, the senders), which therefore run
    on every worker but do their work on one. The lock is lost with the connection; it is checked every
    ``retry_s`` seconds, so two leaders overlap at most that long, and the work they do is safe to overlap
    (ticks take the store locks and versioned states; senders claim rows).
    """

    def __init__(self, *, engine: AsyncEngine, metrics: HubMetrics, retry_s: float = LEADER_RETRY_S) -> None:
        self._engine = engine
        self._metrics = metrics
        self._retry_s = retry_s
        self.leading = False
        self.changes = 0
        self._task = BackgroundTask(self._run, name="storegate-hub-leadership")
        metrics.leader.set(0)

    def start(self) -> None:
        """Start trying to lead on the running loop."""
        self._task.start()

    async def stop(self) -> None:
        """Give up leading (the lock goes with the connection) and stop trying."""
        await self._task.stop()

    @property
    def running(self) -> bool:
        """Whether the task that keeps or seeks the lock is alive."""
        return self._task.running

    def __call__(self) -> bool:
        """Whether to do the leader's work now (the form the tasks take it in)."""
        return self.leading

    async def _run(self) -> None:
        while True:
            connection: AsyncConnection | None = None
            try:
                connection = await self._engine.connect()
                await self._hold(connection)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the database went away: so did the lock, if this worker held it
                log.warning("leadership_connection_lost", error=describe_error(err), leading=self.leading)
            finally:
                self._step_down()
                if connection is not None:
                    # Closed, not returned to the pool: a pooled connection would keep the session lock.
                    await asyncio.shield(_discard(connection))
            await asyncio.sleep(self._retry_s)  # a period between tries, not a synchronisation

    async def _hold(self, connection: AsyncConnection) -> None:
        while True:
            if self.leading:
                await connection.execute(_STILL_THERE)
            else:
                got = (await connection.execute(_TRY_LEAD, {"key": LEADER_LOCK_KEY})).scalar_one()
                if got:
                    self._take_over()
            await connection.commit()  # the session lock outlives the transaction; nothing else is held
            await asyncio.sleep(self._retry_s)  # the period of the check, not a synchronisation

    def _take_over(self) -> None:
        self.leading = True
        self.changes += 1
        self._metrics.leader.set(1)
        log.info("hub_leader_elected", why="this worker now runs the rules ticker and the senders")

    def _step_down(self) -> None:
        if self.leading:
            log.warning("hub_leader_stepped_down", why="stopping, or its database connection (its lock) is gone")
        self.leading = False
        self._metrics.leader.set(0)


async def _discard(connection: AsyncConnection) -> None:
    try:
        await connection.invalidate()
        await connection.close()
    except Exception as err:  # already broken: closing it is all that was wanted
        log.debug("leadership_connection_close_failed", error=describe_error(err))
