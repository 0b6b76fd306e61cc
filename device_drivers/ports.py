"""Where a device is and who it says it is: ports found by hot-plug, and the binding a driver is opened with.

A device's **stable key** follows it across unplug and replug: its USB serial number when
it has one (``usb-0c2e:0b61-A1B2C3``), else the physical port path it is plugged into
(``port-1-1.2:1.0``), else its device node (``dev-ttyS0``). The agent's config assigns a
device id, profile and settings to a key, so a device's history and config follow it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from storegate.wire import DeviceIdentity

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.:-]+")


@dataclass(frozen=True, slots=True)
class PortInfo:
    """A port a device was found at, as udev or pyserial's port list describe it."""

    address: str  # the device node or URL a driver opens, e.g. "/dev/ttyACM0"
    identity: DeviceIdentity
    # Set by listers that know the model from where they found it (a 1-Wire family code), not from USB ids.
    profile_hint: str | None = None

    @property
    def stable_key(self) -> str:
        """The key this device keeps across unplug and replug (see the module docstring)."""
        ident = self.identity
        if ident.vendor_id and ident.serial_number:
            return _clean(f"usb-{ident.vendor_id}:{ident.product_id or '0000'}-{ident.serial_number}")
        if ident.location:
            return _clean(f"port-{ident.location}")
        return _clean(f"dev-{self.address.rstrip('/').rsplit('/', 1)[-1]}")


@dataclass(frozen=True, slots=True)
class DeviceBinding:
    """What a driver is opened with: the device's id, where it is, and who it said it was."""

    device_id: str
    address: str  # device node, pyserial URL ("socket://...", "loop://"), sysfs path or bus address
    identity: DeviceIdentity | None = None


class PortLister(Protocol):
    """Lists the ports present right now (quick, no waiting)."""

    def list_ports(self) -> list[PortInfo]:
        """Every port present now."""
        ...


class HotplugSettings(Protocol):
    """The agent's ``[hotplug]`` keys a family's own port lister reads (``edge_agent.config.HotplugConfig``)."""

    @property
    def w1_root(self) -> Path:
        """Where the kernel lists 1-Wire probes (``/sys/bus/w1/devices``)."""
        ...


def _clean(key: str) -> str:
    """A key usable as a wire DeviceId: unsafe characters become '_', at most 128 characters."""
    cleaned = _UNSAFE.sub("_", key).strip("_.:-") or "device"
    return cleaned[:128]
