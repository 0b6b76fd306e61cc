"""Login throttling: failures per username and per client address lock sign-ins for a while (pure, in memory).

Kept in the hub process: a restart forgets the counts, and several hub processes count apart (each
still locks after its own few failures). A lockout answers at once, without checking the password,
so guessing cannot go on behind it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

# Distinct keys remembered; past this, keys without recent failures are forgotten first.
MAX_KEYS: Final = 100_000


@dataclass(slots=True)
class _Record:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class LoginThrottle:
    """Counts failed sign-ins per key ("user:<name>", "client:<address>") and locks a key after too many."""

    def __init__(self, *, max_failures: int, window_s: float, lockout_s: float, clock: Callable[[], float]) -> None:
        self._max_failures = max_failures
        self._window_s = window_s
        self._lockout_s = lockout_s
        self._clock = clock
        self._records: dict[str, _Record] = {}

    def retry_after(self, keys: Iterable[str]) -> float:
        """Seconds until every one of ``keys`` may try again (0: now)."""
        now = self._clock()
        waits = [record.locked_until - now for key in keys if (record := self._records.get(key)) is not None]
        return max([0.0, *waits])

    def failed(self, keys: Iterable[str]) -> bool:
        """Count a failure against each key; True when one of them is locked by it."""
        now = self._clock()
        locked = False
        for key in keys:
            record = self._records.get(key)
            if record is None:
                self._forget_some(now)
                record = self._records[key] = _Record()
            record.failures.append(now)
            while record.failures and record.failures[0] <= now - self._window_s:
                record.failures.popleft()
            if len(record.failures) >= self._max_failures:
                record.locked_until = now + self._lockout_s
                record.failures.clear()
                locked = True
        return locked

    def succeeded(self, keys: Iterable[str]) -> None:
        """Forget the failures of ``keys`` (a locked key stays locked until its time)."""
        for key in keys:
            record = self._records.get(key)
            if record is not None and record.locked_until <= self._clock():
                del self._records[key]

    def _forget_some(self, now: float) -> None:
        if len(self._records) < MAX_KEYS:
            return
        stale = [
            key
            for key, r in self._records.items()
            if r.locked_until <= now and (not r.failures or r.failures[-1] <= now - self._window_s)
        ]
        for key in stale or list(self._records)[: MAX_KEYS // 10]:
            del self._records[key]


def throttle_keys(username: str, client: str | None) -> tuple[str, ...]:
    """The keys a sign-in counts against: the username (case-folded) and the client's address."""
    keys = [f"user:{username.strip().casefold()}"]
    if client:
        keys.append(f"client:{client}")
    return tuple(keys)
