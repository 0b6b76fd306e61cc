"""Finding USB printers: the kernel's usblp devices (``/dev/usb/lp*``) listed as ports with their USB identity.

A USB receipt printer is not a serial port, so pyserial's port list never shows it; the
usblp driver lists each one under ``/sys/class/usbmisc/lp<N>``, whose ``device`` link is
the printer's USB interface, and whose parent holds the ids and strings. The agent's
hot-plug scan takes :class:`UsbPrinterLister` from the family's registration, so it needs
to know nothing of printers. A network printer is not listed: it is configured by address.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import structlog
from pydantic import ValidationError

from device_drivers.ports import HotplugSettings, PortInfo, PortLister
from device_drivers.profile_base import ProfileBase
from storegate.wire import DeviceIdentity

log = structlog.get_logger(__name__)

USBMISC_ROOT: Final = Path("/sys/class/usbmisc")
DEV_ROOT: Final = Path("/dev/usb")


def _attribute(directory: Path, name: str) -> str | None:
    try:
        value = (directory / name).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return value[:128] or None


def discover(sys_root: Path = USBMISC_ROOT, dev_root: Path = DEV_ROOT) -> list[PortInfo]:
    """Every usblp printer under ``sys_root``, by its device file under ``dev_root``; an absent root lists nothing."""
    try:
        entries = sorted(entry for entry in sys_root.iterdir() if entry.name.startswith("lp"))
    except OSError:
        return []  # usblp not loaded, or not Linux: no USB printers, not an error
    found: list[PortInfo] = []
    for entry in entries:
        try:
            interface = (entry / "device").resolve(strict=True)
        except OSError:
            continue  # unplugged between the listing and now
        usb_device = interface.parent
        vendor = _attribute(usb_device, "idVendor")
        if vendor is None:
            continue
        product_id = _attribute(usb_device, "idProduct")
        try:
            identity = DeviceIdentity(
                vendor_id=vendor.lower(),
                product_id=product_id.lower() if product_id else None,
                serial_number=_attribute(usb_device, "serial"),
                manufacturer=_attribute(usb_device, "manufacturer"),
                product=_attribute(usb_device, "product"),
                location=interface.name[:128],  # "1-1.2:1.0": the physical port, as pyserial's location says it
            )
        except ValidationError:
            log.warning("usb_printer_identity_unreadable", entry=str(entry), vendor=vendor, product_id=product_id)
            continue
        found.append(PortInfo(address=str(dev_root / entry.name), identity=identity))
    return found


class UsbPrinterLister:
    """USB printers the usblp driver has bound, each a ``/dev/usb/lp*`` device file."""

    def __init__(self, *, sys_root: Path = USBMISC_ROOT, dev_root: Path = DEV_ROOT) -> None:
        self.sys_root = sys_root
        self.dev_root = dev_root

    def list_ports(self) -> list[PortInfo]:
        """Every usblp printer present now, with its USB identity."""
        return discover(self.sys_root, self.dev_root)


def port_lister(profiles: Sequence[ProfileBase], hotplug: HotplugSettings) -> PortLister:
    """The family's lister for hot-plug: usblp printers (matched to profiles by their USB ids, as serial ports are)."""
    return UsbPrinterLister()
