"""A driver's own view of its device, kept as things happen and handed out as a :class:`DriverHealth`."""

from __future__ import annotations

from datetime import datetime

from device_drivers.base import DeviceUnavailableError, DriverHealth, DriverState


class HealthRecord:
    """State, last error, last reading time and readings total of one driver; :meth:`snapshot` is its ``health()``.

    The last error is the latest trouble of any kind (the device going away, a reject, a
    silence), so a health report shows what went wrong most recently.
    """

    def __init__(self) -> None:
        self.state = DriverState.CLOSED
        self.last_error: str | None = None
        self.last_reading_at: datetime | None = None
        self.readings_total = 0

    @property
    def is_up(self) -> bool:
        """Whether the device is open and working."""
        return self.state is DriverState.UP

    def opening(self) -> None:
        """The driver is opening the device."""
        self.state = DriverState.OPENING

    def up(self) -> None:
        """The device is open."""
        self.state = DriverState.UP

    def closed(self) -> None:
        """The driver closed the device."""
        self.state = DriverState.CLOSED

    def down(self, error: BaseException | str) -> None:
        """The device went away, or could not be opened: DOWN, with why."""
        self.state = DriverState.DOWN
        self.last_error = str(error)

    def unavailable(self, message: str) -> DeviceUnavailableError:
        """:meth:`down` with ``message``, and the error to raise."""
        self.down(message)
        return DeviceUnavailableError(message)

    def note(self, trouble: str) -> None:
        """Trouble that leaves the device up (a reject, a silence): the last error."""
        self.last_error = trouble

    def read(self, ts: datetime, count: int = 1) -> None:
        """``count`` readings taken at ``ts``."""
        self.readings_total += count
        self.last_reading_at = ts

    def snapshot(self) -> DriverHealth:
        """The health as of now, without I/O."""
        return DriverHealth(
            state=self.state,
            last_error=self.last_error,
            last_reading_at=self.last_reading_at,
            readings_total=self.readings_total,
        )
