"""The interface every device driver implements, and the errors drivers raise.

A driver turns one physical (or simulated) device into an async stream of
:class:`Reading` objects and executes hub commands on it. It does not reconnect
by itself: when the device goes away, ``readings()`` ends or raises, and the
agent's supervisor opens the driver again with jittered, capped backoff.

Exception tree (catch :class:`DriverError` for "anything a driver reports")::

    DriverError                      base of every failure a driver reports
    ├── DeviceUnavailableError       device absent, unplugged, powered off or silent  (retryable)
    │   └── DeviceNotReadyError      it answered that it cannot do it now, and did nothing  (retryable)
    ├── ProtocolError                device answered with bytes that are not its protocol
    └── CommandNotSupportedError     the device (or driver) has no such command

Library and OS errors are converted at the transport with ``raise ... from err``,
so nothing above a driver sees ``OSError`` or ``serial.SerialException``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import ClassVar, Protocol, Self, runtime_checkable

from pydantic import JsonValue

from storegate.wire import Command, CommandResult


class DriverError(Exception):
    """Base of every failure a driver reports; ``retryable`` says whether trying again may succeed."""

    retryable: ClassVar[bool] = False


class DeviceUnavailableError(DriverError):
    """The device cannot be reached right now (absent, unplugged, busy, silent); retrying may succeed."""

    retryable: ClassVar[bool] = True


class DeviceNotReadyError(DeviceUnavailableError):
    """The device answered that it cannot do the command now (a printer out of paper) and did nothing of it.

    Apart from its parent so that a caller who counts attempts (the print queue's REPRINT mark) knows this
    one left no trace: the next try is still the first that reaches the device.
    """


class ProtocolError(DriverError):
    """The device sent something its protocol does not allow (garbled frame, bad checksum, wrong reply)."""


class CommandNotSupportedError(DriverError):
    """The command is not one this device or driver can execute."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One thing a device reported; the agent turns it into a wire ``Event``."""

    device_id: str
    kind: str
    ts: datetime
    payload: dict[str, JsonValue] = field(default_factory=dict)
    # The device's own number of this reading, for devices that keep a history and can replay it:
    # the agent stores each number once per device and drops a replayed one (see Resumable).
    source_seq: int | None = None
    # A still the reading refers to (a camera's JPEG), kept by the gateway apart from the event: the agent stores
    # it in its snapshot spool, puts the spool's reference in the payload's ``snapshot_ref`` and uploads it to the
    # hub. Events stay small and the outbox never carries images.
    attachment: bytes | None = field(default=None, repr=False)


class DriverState(StrEnum):
    """Where a driver is in its lifecycle."""

    CLOSED = "closed"
    OPENING = "opening"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class DriverHealth:
    """A driver's own view of its device, for health reports and metrics."""

    state: DriverState
    last_error: str | None = None
    last_reading_at: datetime | None = None
    readings_total: int = 0
    # Up, but a person must act, in words: a printer out of paper, a camera whose lens is covered. The agent's
    # health names it beside the devices that are down.
    attention: str | None = None


@runtime_checkable
class Driver(Protocol):
    """One device behind a small async interface. Async context manager; reusable, not re-entrant."""

    async def __aenter__(self) -> Self:
        """Open the device, or raise a DriverError subtype."""
        ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the device; always succeeds and is idempotent."""
        ...

    def readings(self) -> AsyncIterator[Reading]:
        """Readings as the device produces them; ends or raises a DriverError when the device goes away."""
        ...

    async def execute(self, command: Command) -> CommandResult:
        """Execute one hub command; raises CommandNotSupportedError for a command the device lacks."""
        ...

    def health(self) -> DriverHealth:
        """State, last error and last reading time, without I/O."""
        ...


@runtime_checkable
class WatchesShelves(Protocol):
    """Optional part of a Driver whose device sees shelves (a camera): the agent asks it for a still at a pick."""

    def watches_shelf(self, shelf_id: str) -> bool:
        """Whether the device's view covers the shelf ``shelf_id`` (its config says which)."""
        ...


@runtime_checkable
class Resumable(Protocol):
    """Optional part of a Driver whose device numbers its readings (``source_seq``) and can replay them.

    The supervisor calls :meth:`resume_after` before every open with the highest number the
    outbox has committed for the device (None: nothing yet), and the driver's ``readings()``
    then starts right after it. A replayed reading the outbox already has is dropped there,
    so a driver may safely start a little early.
    """

    def resume_after(self, source_seq: int | None) -> None:
        """Start the next ``readings()`` after reading number ``source_seq`` (from the first when None)."""
        ...
