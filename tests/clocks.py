"""The one fake clock of the tests: a :class:`storegate.clock.Clock` on virtual time."""

from __future__ import annotations

import asyncio
import heapq
from datetime import UTC, datetime, timedelta

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """Virtual time: ``now()`` is ``start`` plus the virtual seconds passed, ``monotonic()`` counts them.

    Time passes when a test calls :meth:`advance`, and a ``sleep`` returns once the time has
    passed its end. With ``autojump`` a ``sleep`` passes its own time at once instead, so the
    code under test runs as fast as it can on a schedule that never drifts. Every sleep asked
    for is kept in :attr:`sleeps`.
    """

    def __init__(self, *, start: datetime = T0, monotonic: float = 0.0, autojump: bool = False) -> None:
        self.start = start
        self.autojump = autojump
        self.sleeps: list[float] = []
        self._origin = monotonic
        self._t = monotonic
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._n = 0

    def now(self) -> datetime:
        """``start`` plus the virtual time passed."""
        return self.start + timedelta(seconds=self._t - self._origin)

    def monotonic(self) -> float:
        """The virtual monotonic time."""
        return self._t

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` of virtual time have passed (at once with ``autojump``; zero or less: yield)."""
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if self.autojump:
            self.advance(seconds)
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._n += 1
        heapq.heappush(self._sleepers, (self._t + seconds, self._n, future))
        await future

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, waking every sleep that ends by then."""
        self._t += seconds
        while self._sleepers and self._sleepers[0][0] <= self._t:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
