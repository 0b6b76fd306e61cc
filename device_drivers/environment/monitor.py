"""Stale-sensor detection and local threshold alarms, wrapped around any environment sensor's driver."""

from __future__ import annotations

from device_drivers.base import Driver
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.ports import DeviceBinding


def monitored(driver: Driver, *, binding: DeviceBinding, settings: EnvironmentSettings) -> Driver:
    """``driver`` with stale detection and local alarms added to its readings."""
    raise NotImplementedError("being written")
