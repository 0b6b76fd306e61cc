"""The failures a printer driver reports, beside those of :mod:`device_drivers.base`.

::

    DriverError
    ├── DeviceUnavailableError           (retryable)
    │   └── DeviceNotReadyError
    │       └── PrinterNotReadyError     offline, paper out or cover open before a job: nothing printed
    └── PrintJobInvalidError             a print command the driver cannot print (bad or missing args): not retryable

A job interrupted after it started (the connection dropped, no status answer after it) is a
plain :class:`~device_drivers.base.DeviceUnavailableError` whose message says the job may be
partly printed.
"""

from __future__ import annotations

from device_drivers.base import DeviceNotReadyError, DriverError


class PrinterNotReadyError(DeviceNotReadyError):
    """The printer said before the job that it cannot print now (offline, paper out, cover open); nothing printed."""


class PrintJobInvalidError(DriverError):
    """A ``print`` command with an unknown document or bad arguments; printing it again would fail the same way."""
