"""When to say that a broker cannot be reached: at once, then less and less often, and once when it is back.

paho retries an unreachable broker every few seconds, forever and silently. One line per attempt would drown a
gateway's log during a night without network; none at all left technicians staring at a quiet agent. So the first
failure of an outage is logged at once, then one line after 10 s, 20 s, 40 s... of failing, the interval doubling
up to every 5 min, and one line when the broker answers again, saying for how long it was away.

Pure: the caller passes the monotonic time and logs what it is told to.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Final

FIRST_REPEAT_S: Final = 10.0
MAX_REPEAT_S: Final = 300.0


@dataclass(frozen=True, slots=True)
class Outage:
    """What to say about an outage: how long it has lasted and how many attempts failed so far."""

    failing_for_s: float
    attempts: int


class UnreachableWarnings:
    """Decides which failed attempts to reach the broker are worth a warning, and notes its return."""

    def __init__(self, *, first_repeat_s: float = FIRST_REPEAT_S, max_repeat_s: float = MAX_REPEAT_S) -> None:
        if not 0 < first_repeat_s <= max_repeat_s:
            raise ValueError("need 0 < first_repeat_s <= max_repeat_s")
        self._first_repeat_s = first_repeat_s
        self._max_repeat_s = max_repeat_s
        self._since: float | None = None  # when the outage began; None while the broker is reachable
        self._attempts = 0
        self._next_warning_at = 0.0
        self._interval_s = first_repeat_s

    @property
    def unreachable(self) -> bool:
        """Whether an outage is going on (a failure since the last successful connection)."""
        return self._since is not None

    def failed(self, now: float) -> Outage | None:
        """One more failed attempt at ``now``: the outage to warn about, or None to stay quiet this time."""
        self._attempts += 1
        if self._since is None:
            self._since = now
            self._interval_s = self._first_repeat_s
            self._next_warning_at = now + self._interval_s
            return Outage(failing_for_s=0.0, attempts=self._attempts)
        if now < self._next_warning_at:
            return None
        self._interval_s = min(self._interval_s * 2, self._max_repeat_s)
        self._next_warning_at = now + self._interval_s
        return Outage(failing_for_s=now - self._since, attempts=self._attempts)

    def reached(self, now: float) -> Outage | None:
        """The broker answered at ``now``: the outage that ends (to note), or None when there was none."""
        if self._since is None:
            return None
        outage = Outage(failing_for_s=now - self._since, attempts=self._attempts)
        self._since = None
        self._attempts = 0
        return outage


def describe_connect_error(err: BaseException | None) -> str:
    """Why a connection attempt failed, in words a technician can act on."""
    if err is None:
        return "the connection failed (no reason given)"
    detail = getattr(err, "strerror", None) or str(err) or type(err).__name__
    if isinstance(err, socket.gaierror):
        return f"the broker's host name does not resolve ({detail}): check the name and the DNS"
    if isinstance(err, ssl.SSLCertVerificationError):
        why = getattr(err, "verify_message", None) or detail
        return f"the broker's TLS certificate is not trusted ({why}): check ca_file"
    if isinstance(err, ssl.SSLError):
        why = getattr(err, "reason", None) or detail
        return f"the TLS handshake failed ({why}): check the certificates and that the port is TLS"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused: nothing listens on that port (broker down, or a wrong port)"
    if isinstance(err, TimeoutError):
        return "no answer in time: the broker's host is down or a firewall drops the packets"
    if isinstance(err, OSError) and err.errno is not None:
        return f"network error: {detail}"
    return detail
