"""Time for the agent: an injectable clock, and the backoff used for every retry."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from storegate.wire import utc_now


class Clock(Protocol):
    """Where the agent gets the time: wall time for timestamps, a monotonic clock for durations."""

    def now(self) -> datetime:
        """The current time, aware, UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current time, aware, UTC."""
        return utc_now()

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()


@dataclass(frozen=True, slots=True)
class Backoff:
    """Jittered, capped exponential backoff: half of the capped delay is fixed, half random."""

    initial_s: float = 1.0
    max_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        capped = min(self.max_s, self.initial_s * 2.0 ** max(attempt - 1, 0))
        return capped / 2 + rng.uniform(0, capped / 2)
