"""Door contact logic without I/O: addresses, contact polarity and the debouncer.

A reed contact bounces for a few milliseconds when it switches, and a door rattling in its
frame can open and close the contact briefly. :class:`Debouncer` takes raw contact levels
with their (monotonic) times and reports a change only once the new level has held for
``debounce_s``; a level that flips back before then is forgotten.
"""

from __future__ import annotations

import re
from typing import Final

_GPIO: Final = re.compile(r"^gpio:(?:([0-9]{1,3})|((?:GPIO|BCM|BOARD|J8:|WPI)[0-9]{1,3}))$", re.IGNORECASE)


def parse_gpio_address(address: str) -> int | str:
    """The pin of ``gpio:17`` (BCM number, an int) or ``gpio:BOARD11`` (a gpiozero pin name); ValueError else."""
    match = _GPIO.match(address.strip())
    if match is None:
        raise ValueError(f"{address!r} is not a GPIO address like 'gpio:17'")
    number, name = match.groups()
    return int(number) if number is not None else str(name).upper()


def door_is_open(conducting: bool, *, normally_open: bool) -> bool:
    """Whether the door is open, given whether the contact conducts and its polarity."""
    # normally_open=False (NC loop): conducting means closed, and a cut wire reads as open (fail-safe).
    return conducting if normally_open else not conducting


class Debouncer:
    """A boolean level that changes only after the raw level has held the new value for ``debounce_s``."""

    def __init__(self, *, debounce_s: float, initial: bool) -> None:
        if debounce_s < 0:
            raise ValueError("debounce_s must not be negative")
        self.debounce_s = debounce_s
        self.state = initial
        self._pending_since: float | None = None

    @property
    def deadline(self) -> float | None:
        """When the pending change becomes stable (if the level holds), or None."""
        return None if self._pending_since is None else self._pending_since + self.debounce_s

    def feed(self, level: bool, at: float) -> bool | None:
        """A raw level seen at ``at``; returns the new stable state when this confirms a change."""
        if level == self.state:
            self._pending_since = None  # it flipped back in time: a bounce, not a change
            return None
        if self._pending_since is None or at < self._pending_since:
            self._pending_since = at  # (a time before the pending one is a clock glitch: restart the wait)
        return self.poll(at)

    def poll(self, at: float) -> bool | None:
        """Called when no new level came by ``at``: returns the new stable state if the change has held."""
        deadline = self.deadline
        if deadline is None or at < deadline:
            return None
        self.state = not self.state
        self._pending_since = None
        return self.state
