"""Time for both sides: one injectable clock with wall time, monotonic time and sleeping.

Drivers, the agent and the hub's timers take a :class:`Clock` so that tests can drive time
instead of waiting for it. :data:`SYSTEM_CLOCK` is the real one.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Final, Protocol

from storegate.wire import utc_now


class Clock(Protocol):
    """Wall time for timestamps, monotonic time for durations, and sleeping: the seam tests replace."""

    def now(self) -> datetime:
        """The current time, aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never steps (durations, deadlines)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on the monotonic clock (zero or less: yield once)."""
        ...


class SystemClock:
    """The real clock: ``utc_now``, ``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> datetime:
        """The current time, aware UTC."""
        return utc_now()

    def monotonic(self) -> float:
        """``time.monotonic()`` (the clock asyncio's loop runs on)."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep``."""
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK: Final = SystemClock()
