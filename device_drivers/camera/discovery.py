"""Finding USB cameras: V4L2 capture nodes listed from sysfs, each with the profile that fits it.

A UVC camera makes two nodes (``video0`` for frames, ``video1`` for metadata); the node whose
sysfs ``index`` is 0 is the capture one. Its USB ids come from the USB device directory above
the node's ``device`` link. No OpenCV here: hot-plug runs on gateways without cameras too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from device_drivers.camera.profile import CameraProfile
from device_drivers.ports import HotplugSettings, PortInfo, PortLister
from device_drivers.profile_base import ProfileBase
from storegate.wire import DeviceIdentity

V4L_ROOT: Final = Path("/sys/class/video4linux")
DEV_ROOT: Final = Path("/dev")


def _read(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return text or None


def _usb_device(node: Path) -> Path | None:
    """The USB device directory (with idVendor) above a node's ``device`` link, if any."""
    try:
        here = (node / "device").resolve(strict=True)
    except OSError:
        return None
    for candidate in (here, *here.parents):
        if (candidate / "idVendor").is_file():
            return candidate
    return None


def discover(root: Path = V4L_ROOT, dev: Path = DEV_ROOT) -> list[PortInfo]:
    """The V4L2 capture nodes under ``root``, as ports at ``dev``/videoN with their USB identity."""
    try:
        nodes = sorted(root.iterdir(), key=lambda p: (len(p.name), p.name))
    except OSError:
        return []  # no V4L2 at all: no cameras, not an error
    found: list[PortInfo] = []
    for node in nodes:
        if not node.name.startswith("video") or _read(node / "index") not in (None, "0"):
            continue
        usb = _usb_device(node)
        identity = DeviceIdentity(
            vendor_id=None if usb is None else _read(usb / "idVendor"),
            product_id=None if usb is None else _read(usb / "idProduct"),
            serial_number=None if usb is None else _read(usb / "serial"),
            manufacturer=None if usb is None else _read(usb / "manufacturer"),
            product=_read(node / "name") if usb is None else (_read(usb / "product") or _read(node / "name")),
            location=None if usb is None else usb.name,
        )
        found.append(PortInfo(address=str(dev / node.name), identity=identity))
    return found


class V4lLister:
    """USB cameras present now, each with the camera profile its USB ids match, else the generic one."""

    def __init__(self, *, profiles: Sequence[CameraProfile], root: Path = V4L_ROOT, dev: Path = DEV_ROOT) -> None:
        self.profiles = [p for p in profiles if p.transport == "v4l2"]
        self.root = root
        self.dev = dev

    def hint(self, port: PortInfo) -> str | None:
        """The id of the profile for ``port``: the most specific USB match, else a ``v4l_any`` profile."""
        best: tuple[int, str] | None = None
        for profile in self.profiles:
            for usb in profile.usb:
                if usb.matches(port) and (best is None or (usb.specificity, profile.id) > best):
                    best = (usb.specificity, profile.id)
        if best is not None:
            return best[1]
        generic = sorted(p.id for p in self.profiles if p.v4l_any)
        return generic[0] if generic else None

    def list_ports(self) -> list[PortInfo]:
        """Every capture node present now that some camera profile takes."""
        ports: list[PortInfo] = []
        for port in discover(self.root, self.dev):
            hint = self.hint(port)
            if hint is not None:
                ports.append(PortInfo(address=port.address, identity=port.identity, profile_hint=hint))
        return ports


def port_lister(profiles: Sequence[ProfileBase], hotplug: HotplugSettings) -> PortLister:
    """The family's lister for hot-plug: V4L2 capture nodes for the catalog's USB camera profiles."""
    return V4lLister(profiles=[p for p in profiles if isinstance(p, CameraProfile)])
