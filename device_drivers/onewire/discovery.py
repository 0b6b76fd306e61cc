"""Finding 1-Wire probes: the w1 sysfs tree listed as ports, each with the profile its family code names.

The agent's hot-plug scan takes this family's :class:`OneWireLister` from the family's
registration (``device_drivers.onewire.FAMILY``), so it needs to know nothing of 1-Wire.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from device_drivers.onewire.profile import OneWireSensorProfile
from device_drivers.onewire.protocol import FAMILY_NAMES, parse_device_name, rom_id
from device_drivers.ports import HotplugSettings, PortInfo, PortLister
from device_drivers.profile_base import ProfileBase
from storegate.wire import DeviceIdentity


def discover(root: Path, family_codes: Iterable[str] = ("28",)) -> list[PortInfo]:
    """The probes of these families present under ``root`` (``/sys/bus/w1/devices``), by device directory.

    Each probe's identity carries its 64-bit ROM id as ``serial_number``; an absent root lists nothing.
    """
    wanted = {code.lower() for code in family_codes}
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []  # no w1 master loaded (or no bus at all): no probes, not an error
    found: list[PortInfo] = []
    for entry in entries:
        parsed = parse_device_name(entry.name)
        if parsed is None or parsed[0] not in wanted:
            continue
        identity = DeviceIdentity(serial_number=rom_id(entry.name), product=FAMILY_NAMES.get(parsed[0]))
        found.append(PortInfo(address=str(entry), identity=identity))
    return found


class OneWireLister:
    """1-Wire probes under the w1 sysfs root, each with the profile its family code names."""

    def __init__(self, *, root: Path, profiles: Sequence[OneWireSensorProfile]) -> None:
        self.root = root
        self.profiles = list(profiles)

    def list_ports(self) -> list[PortInfo]:
        """Every probe present now of a family some profile knows."""
        found: list[PortInfo] = []
        for profile in self.profiles:
            for port in discover(self.root, profile.family_codes):
                found.append(PortInfo(address=port.address, identity=port.identity, profile_hint=profile.id))
        return found


def port_lister(profiles: Sequence[ProfileBase], hotplug: HotplugSettings) -> PortLister:
    """The family's lister for hot-plug: the probes of the catalog's 1-Wire profiles under ``hotplug.w1_root``."""
    return OneWireLister(root=hotplug.w1_root, profiles=[p for p in profiles if isinstance(p, OneWireSensorProfile)])
