"""The backoff the agent uses for every retry (the clock is :mod:`storegate.clock`)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Jittered, capped exponential backoff: half of the capped delay is fixed, half random."""

    initial_s: float = 1.0
    max_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        capped = min(self.max_s, self.initial_s * 2.0 ** max(attempt - 1, 0))
        return capped / 2 + rng.uniform(0, capped / 2)
