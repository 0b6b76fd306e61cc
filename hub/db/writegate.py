"""SQLite's one write lock, taken in turns by the hub's own writers: first come, first served.

SQLite lets one transaction write at a time. A connection that finds the lock held sleeps and tries
again (its busy handler), with no queue. Under a backlog the consumer commits a unit and starts the
next within milliseconds, so it wins most of those retries, and an operator's change waited seconds
for its turn (up to 2.3 s in ``bench/hub_ingest.py --operator-writes``; see docs/benchmarks.md) and
could outwait the busy timeout. Within one process the writers can queue instead: each takes a turn
of this gate before its write transaction and gives it back after the commit. The gate is an
``asyncio.Lock``, whose waiters are served in the order they came, so a change made through the API
waits for the unit in progress and not for the units after it.

PostgreSQL locks rows, not the database: there the gate lets every writer through at once.

Lock order, everywhere: a turn of the gate first, then the rules engine's unit lock
(:meth:`hub.alerting.monitoring.MonitoringEngine.unit`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

from hub.errors import HubError

# The writers, as they are named in the gate's metric and in its errors.
INGEST: Final = "ingest"
API: Final = "api"
RULES: Final = "rules"
COMMANDS: Final = "commands"
NOTIFICATIONS: Final = "notifications"
AUDIT: Final = "audit"  # the audit log's entries of API writes (hub.auth.guard), after each write
RETENTION: Final = "retention"  # background purges of what has outlived its retention (camera stills)


class WriteGateTimeout(HubError):
    """A writer did not get its turn within its time limit; it wrote nothing."""


class WriteGate:
    """Turns at the database's write lock for the writers of one hub process.

    ``serialise``: True on SQLite (one write lock for the whole database), False on PostgreSQL.
    ``observe(writer, seconds)`` is told how long each turn was waited for.
    """

    def __init__(
        self,
        *,
        serialise: bool,
        observe: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = asyncio.Lock() if serialise else None
        self._observe = observe
        self._clock = clock
        self._holder: str | None = None
        self._held_since = 0.0
        self._waiting = 0

    @property
    def serialises(self) -> bool:
        """Whether writers take turns (SQLite)."""
        return self._lock is not None

    @property
    def holder(self) -> str | None:
        """The writer whose turn it is, if any."""
        return self._holder

    @property
    def waiting(self) -> int:
        """Writers queued for a turn."""
        return self._waiting

    def held_for(self) -> float | None:
        """Seconds the current turn has lasted, or None when nobody holds one (for /healthz)."""
        return self._clock() - self._held_since if self._holder is not None else None

    @asynccontextmanager
    async def turn(self, writer: str, *, timeout_s: float | None = None) -> AsyncIterator[None]:
        """Hold the write lock's turn for ``writer`` (waiting at most ``timeout_s``: :class:`WriteGateTimeout`)."""
        lock = self._lock
        if lock is None:
            yield
            return
        started = time.perf_counter()
        self._waiting += 1
        try:
            async with asyncio.timeout(timeout_s):
                await lock.acquire()
        except TimeoutError:
            raise WriteGateTimeout(
                f"the database is busy: the {self._holder or 'other'} writer held it and no turn to write "
                f"came within {timeout_s:g} s"
            ) from None
        finally:
            self._waiting -= 1
        if self._observe is not None:
            self._observe(writer, time.perf_counter() - started)
        self._holder = writer
        self._held_since = self._clock()
        try:
            yield
        finally:
            self._holder = None
            lock.release()


# Writers that need no turns (PostgreSQL, or a writer used alone as in tests); it holds no state, so one is shared.
NO_TURNS: Final = WriteGate(serialise=False)
