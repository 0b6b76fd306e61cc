"""Devices that come and go: finding ports, matching them to profiles, starting and stopping their drivers.

Store staff plug a scanner or a shelf into the gateway and expect it to work. The
:class:`DeviceManager` keeps one :class:`DeviceSupervisor` per device:

- devices with a fixed ``address`` (and the simulated ones) start with the agent;
- hot-plugged devices are found by scanning the port list (USB serial ports, USB
  keyboards, and the ports of every driver family that registers a lister of its own,
  see :mod:`device_drivers.families`): when udev works (Linux, through pyudev) a kernel
  event triggers the scan at once, otherwise (or in addition) the list is polled. A new
  port is matched to a ``[[devices]]`` entry by its stable key, else to a profile (by
  its USB ids, or by the profile its lister names); its driver starts and
  ``device.attached`` follows once it opens. A port that disappears stops its driver: ``device.detached``.
  A port no profile matches is reported once as ``device.unknown`` with its
  identifiers, so a technician can assign a profile;
- a driver that fails is reopened with backoff by its supervisor (``device.error`` once
  per outage), without disturbing the others.

The device id of a hot-plugged device is its stable key (see :mod:`device_drivers.ports`)
unless a ``[[devices]]`` entry with that ``identity`` names it, so its history and config
follow it across unplug and replug.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from device_drivers.base import Driver, Reading
from device_drivers.families import families
from device_drivers.ports import PortInfo
from device_drivers.ports import PortLister as PortLister  # the agent names it here
from device_drivers.profile_base import ProfileBase
from device_drivers.profiles import ProfileCatalog
from edge_agent.config import DeviceConfig, HotplugConfig, ProfiledDeviceConfig
from edge_agent.devices import DeviceSupervisor
from edge_agent.errors import AgentStoppedError, InvalidReadingError
from edge_agent.timing import Backoff
from storegate import wire
from storegate.clock import Clock
from storegate.tasks import wait_for_event
from storegate.wire import DeviceIdentity, EventKind

log = structlog.get_logger(__name__)

# A factory that also hears what a hot-plugged device said about itself.
Builder = Callable[[DeviceConfig, DeviceIdentity | None], Driver]


class SerialPortLister:
    """USB serial ports (CDC-ACM, USB-serial adapters) from pyserial's port list; built-in UARTs are left out."""

    def list_ports(self) -> list[PortInfo]:
        """Every USB serial port present now, with its USB identity."""
        from serial.tools import list_ports

        bench = os.environ.get(BENCH_USB_PORTS_ENV)
        found: list[PortInfo] = []
        for port in bench_usb_ports(Path(bench)) if bench else list_ports.comports():
            if port.vid is None:
                continue  # a UART on the board: configure it by address, it is not plugged in
            found.append(
                PortInfo(
                    address=port.device,
                    identity=DeviceIdentity(
                        vendor_id=f"{port.vid:04x}",
                        product_id=f"{port.pid:04x}" if port.pid is not None else None,
                        serial_number=_short(port.serial_number),
                        manufacturer=_short(port.manufacturer),
                        product=_short(port.product),
                        location=_short(port.location),
                    ),
                )
            )
        return found


# A bench and test seam, and only that: the JSON file it names stands in for the USB descriptions pyserial reads
# from sysfs (a pty, a bench adapter flashed with simulated firmware, has none). Everything above the port list
# (matching, identities, drivers opening the ports) runs as on a gateway; a warning says the seam is in use.
BENCH_USB_PORTS_ENV: Final = "STOREGATE_BENCH_USB_PORTS"


class BenchUsbPort(BaseModel):
    """One USB serial port as sysfs would describe it, in the file ``STOREGATE_BENCH_USB_PORTS`` names."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field(max_length=256, description="the port's path, e.g. a pty's /dev/pts/7")
    vid: int = Field(ge=0, le=0xFFFF)
    pid: int | None = Field(default=None, ge=0, le=0xFFFF)
    serial_number: str | None = Field(default=None, max_length=256)
    manufacturer: str | None = Field(default=None, max_length=256)
    product: str | None = Field(default=None, max_length=256)
    location: str | None = Field(default=None, max_length=256)


_BENCH_PORTS: Final = TypeAdapter(list[BenchUsbPort])
_bench_warned: set[str] = set()


def bench_usb_ports(path: Path) -> list[Any]:
    """The ports the bench file describes, as pyserial's ``ListPortInfo``; none (logged) when it cannot be read."""
    from serial.tools.list_ports_common import ListPortInfo

    try:
        described = _BENCH_PORTS.validate_json(path.read_bytes())
    except (OSError, ValidationError) as err:
        log.error("bench_usb_ports_unreadable", path=str(path), error=str(err)[:500])
        return []
    if str(path) not in _bench_warned:  # once per file: the list is polled every few seconds
        _bench_warned.add(str(path))
        log.warning("bench_usb_ports_in_use", path=str(path), ports=len(described))
    ports = []
    for entry in described:
        info = ListPortInfo(entry.device, skip_link_detection=True)
        info.vid, info.pid, info.serial_number = entry.vid, entry.pid, entry.serial_number
        info.manufacturer, info.product, info.location = entry.manufacturer, entry.product, entry.location
        ports.append(info)
    return ports


def _short(value: str | None) -> str | None:
    return None if not value else value[:128]


class CombinedLister:
    """The ports of several listers; one that fails is logged and left out of that scan."""

    def __init__(self, listers: Sequence[PortLister]) -> None:
        self.listers = list(listers)

    def list_ports(self) -> list[PortInfo]:
        """Every port any lister reports (the first report of an address wins)."""
        seen: dict[str, PortInfo] = {}
        for lister in self.listers:
            try:
                ports = lister.list_ports()
            except Exception as err:  # a broken lister must not stop the others
                log.warning("port_listing_failed", lister=type(lister).__name__, error=str(err))
                continue
            for port in ports:
                seen.setdefault(port.address, port)
        return list(seen.values())


@dataclass(frozen=True, slots=True)
class PortChanges:
    """What changed between two scans."""

    arrived: tuple[PortInfo, ...]
    left: tuple[PortInfo, ...]


def identifiable(port: PortInfo) -> bool:
    """Whether a port says who it is (USB ids or a serial number); others are neither matched nor reported."""
    return port.identity.vendor_id is not None or port.identity.serial_number is not None


def profile_for(catalog: ProfileCatalog, port: PortInfo) -> ProfileBase | None:
    """The profile hot-plug gives a port: the one its lister names, else the best USB match; None: unknown.

    The one matcher: the agent and ``storegate provision detect`` both ask it.
    """
    return catalog.profiles.get(port.profile_hint) if port.profile_hint else catalog.match(port)


def diff_ports(before: Iterable[PortInfo], now: Iterable[PortInfo]) -> PortChanges:
    """Ports that arrived and left between two scans; a port whose identity changed left and arrived."""
    old = {(p.address, p.stable_key): p for p in before}
    new = {(p.address, p.stable_key): p for p in now}
    return PortChanges(
        arrived=tuple(p for key, p in sorted(new.items()) if key not in old),
        left=tuple(p for key, p in sorted(old.items()) if key not in new),
    )


# The kernel subsystems whose events wake the scan: serial ports, keyboard-wedge scanners, USB printers (the
# usblp driver's /dev/usb/lp*) and cameras (V4L2 nodes). 1-Wire probes have no udev events: they are polled.
UDEV_SUBSYSTEMS: Final = ("tty", "input", "usbmisc", "video4linux")


def _udev_monitor() -> object:
    import pyudev

    monitor = pyudev.Monitor.from_netlink(pyudev.Context())
    for subsystem in UDEV_SUBSYSTEMS:
        monitor.filter_by(subsystem)
    monitor.start()
    return monitor


class UdevWakeups:
    """Kernel device events (:data:`UDEV_SUBSYSTEMS`) through pyudev: each one wakes the scanner at once.

    ``monitor_factory`` is a seam for tests: anything with ``fileno()`` and ``poll(timeout)``
    as pyudev's ``Monitor`` has.
    """

    def __init__(self, wake: asyncio.Event, *, monitor_factory: Callable[[], object] = _udev_monitor) -> None:
        self._wake = wake
        self._monitor: object | None = None
        self._factory = monitor_factory

    def start(self) -> bool:
        """Start listening; False when udev is not available here (no pyudev, no netlink, not Linux)."""
        try:
            monitor = self._factory()
            fileno = getattr(monitor, "fileno")  # noqa: B009 - pyudev is untyped: typed as object here
            asyncio.get_running_loop().add_reader(fileno(), self._readable, monitor)
        except Exception as err:  # ImportError, OSError from netlink in a container: fall back to polling
            log.info("udev_unavailable", error=str(err) or type(err).__name__, fallback="polling")
            return False
        self._monitor = monitor
        return True

    def _readable(self, monitor: object) -> None:
        poll = getattr(monitor, "poll")  # noqa: B009 - pyudev is typed as object here: it may not be installed
        while poll(timeout=0) is not None:
            pass  # drain: the scan reads the current state, the events only say "look now"
        self._wake.set()

    def stop(self) -> None:
        """Stop listening; idempotent."""
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            fileno = getattr(monitor, "fileno")  # noqa: B009
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fileno())


@dataclass(slots=True)
class _Running:
    supervisor: DeviceSupervisor
    task: asyncio.Task[None]
    port: PortInfo | None  # None for fixed devices


class DeviceManager:
    """All of a gateway's devices: fixed ones from the config, hot-plugged ones as they come and go."""

    def __init__(
        self,
        *,
        devices: Sequence[DeviceConfig],
        build: Builder,
        catalog: ProfileCatalog,
        record: Callable[[Reading], Awaitable[None]],
        backoff: Backoff,
        clock: Clock,
        rng: random.Random,
        committed_mark: Callable[[str], int | None],
        hotplug: HotplugConfig,
        lister: PortLister | None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._configured = list(devices)
        self._by_identity = {
            d.identity: d for d in devices if isinstance(d, ProfiledDeviceConfig) and d.identity is not None
        }
        self._fixed_addresses = {d.address for d in devices if isinstance(d, ProfiledDeviceConfig) and d.address}
        self._build = build
        self._catalog = catalog
        self._record = record
        self._backoff = backoff
        self._clock = clock
        self._rng = rng
        self._committed_mark = committed_mark
        self._hotplug = hotplug
        self._lister = lister
        self._on_change = on_change  # called when a device starts or stops running
        self._running: dict[str, _Running] = {}
        self._ports: list[PortInfo] = []  # as of the last scan
        self._unknown: set[str] = set()  # stable keys reported as unknown while present
        self._wake = asyncio.Event()
        self._scanning = asyncio.Lock()
        self.scans = 0

    @property
    def supervisors(self) -> list[DeviceSupervisor]:
        """The supervisors of every device running now."""
        return [running.supervisor for running in self._running.values()]

    @property
    def device_ids(self) -> list[str]:
        """The ids of every device running now, sorted."""
        return sorted(self._running)

    def supervisor(self, device_id: str) -> DeviceSupervisor | None:
        """The supervisor of one running device, or None."""
        running = self._running.get(device_id)
        return None if running is None else running.supervisor

    def rescan(self) -> None:
        """Scan the ports soon rather than at the next poll (a hint, as udev gives)."""
        self._wake.set()

    async def scan_now(self) -> None:
        """Scan the ports and act on what changed; returns once done (one scan at a time)."""
        async with self._scanning:
            await self._scan()

    async def run(self) -> None:
        """Start the fixed devices, then follow hot-plug until cancelled; cancelling stops every driver."""
        udev: UdevWakeups | None = None
        try:
            for config in self._configured:
                if isinstance(config, ProfiledDeviceConfig) and config.identity is not None:
                    continue  # started when it is plugged in
                self._start(config, port=None)
            if self._lister is None or not self._hotplug.enabled:
                await asyncio.Event().wait()  # nothing to watch; run until cancelled
            if self._hotplug.watch in ("auto", "udev"):
                udev = UdevWakeups(self._wake)
                if not udev.start() and self._hotplug.watch == "udev":
                    log.warning("udev_requested_but_unavailable", fallback="polling")
            while True:
                await self.scan_now()
                await wait_for_event(self._wake, self._hotplug.poll_interval_s)
                self._wake.clear()
        finally:
            if udev is not None:
                udev.stop()
            tasks = [running.task for running in self._running.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def restart(self, device_id: str, *, timeout_s: float) -> tuple[bool, str]:
        """Stop the driver of ``device_id`` and start it again; whether it opened within ``timeout_s``, in words.

        KeyError when no such device runs. The same config and port are used: a restart clears a driver's
        state (a wedged serial line, a camera that stopped answering), it does not reconfigure it.
        """
        async with self._scanning:  # not while a scan starts or stops devices
            running = self._running.get(device_id)
            if running is None:
                raise KeyError(device_id)
            log.info("device_restarting", device_id=device_id)
            await self._stop(device_id, reason="restart")
            self._start(running.supervisor.config, port=running.port)
            supervisor = self._running[device_id].supervisor
        if await supervisor.wait_up(timeout_s):
            return True, f"{device_id} restarted and connected again"
        return False, (
            f"{device_id} restarted but not connected within {timeout_s:.0f} s: "
            f"{supervisor.last_error or 'the driver has not opened yet'}"
        )

    async def _scan(self) -> None:
        assert self._lister is not None
        try:
            listed = await asyncio.to_thread(self._lister.list_ports)
            ports = [p for p in listed if p.address not in self._fixed_addresses]
        except Exception as err:  # keep the devices we have; try again at the next scan
            log.warning("port_scan_failed", error=str(err))
            return
        changes = diff_ports(self._ports, ports)
        self._ports = ports
        for port in changes.left:
            await self._left(port)
        for port in changes.arrived:
            await self._arrived(port)
        self.scans += 1  # counted once done, so "n scans" means n scans acted on

    async def _arrived(self, port: PortInfo) -> None:
        key = port.stable_key
        config: DeviceConfig | None = self._by_identity.get(key)
        if config is not None:
            assert isinstance(config, ProfiledDeviceConfig)
            config = config.model_copy(update={"address": port.address})
        else:
            if not identifiable(port):
                return
            profile = profile_for(self._catalog, port)
            if profile is None:
                if key not in self._unknown:
                    self._unknown.add(key)
                    log.warning("device_unknown", key=key, address=port.address, **_identity_fields(port.identity))
                    await self._emit(
                        key, EventKind.DEVICE_UNKNOWN, wire.DeviceUnknown(address=port.address, identity=port.identity)
                    )
                return
            config = ProfiledDeviceConfig(device_id=key, profile=profile.id, address=port.address)
        if config.device_id in self._running:
            # The same device at a new address before its old one was seen to leave: restart it there.
            await self._stop(config.device_id, reason="unplugged")
        log.info("device_plugged_in", device_id=config.device_id, profile=config.profile, address=port.address)
        self._start(config, port=port)

    async def _left(self, port: PortInfo) -> None:
        self._unknown.discard(port.stable_key)
        for device_id, running in list(self._running.items()):
            if running.port is not None and running.port.address == port.address:
                log.info("device_unplugged", device_id=device_id, address=port.address)
                await self._stop(device_id, reason="unplugged")

    def _start(self, config: DeviceConfig, *, port: PortInfo | None) -> None:
        identity = None if port is None else port.identity
        supervisor = DeviceSupervisor(
            config=config,
            factory=lambda c: self._build(c, identity),
            record=self._record,
            backoff=self._backoff,
            clock=self._clock,
            rng=self._rng,
            committed_mark=self._committed_mark,
            identity=identity,
        )
        task = asyncio.create_task(supervisor.run(), name=f"device {config.device_id}")
        self._running[config.device_id] = _Running(supervisor=supervisor, task=task, port=port)
        self._on_change()

    async def _stop(self, device_id: str, *, reason: str) -> None:
        running = self._running.pop(device_id)
        self._on_change()
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)
        address = running.port.address if running.port is not None else "?"
        if running.supervisor.reports_lifecycle and reason in ("unplugged", "unconfigured"):
            await self._emit(
                device_id,
                EventKind.DEVICE_DETACHED,
                wire.DeviceDetached(reason="unplugged" if reason == "unplugged" else "unconfigured", address=address),
            )

    async def _emit(self, device_id: str, kind: str, payload: wire.WireModel) -> None:
        body = payload.model_dump(mode="json", exclude_none=True)
        reading = Reading(device_id=device_id, kind=kind, ts=self._clock.now(), payload=body)
        try:
            await self._record(reading)
        except InvalidReadingError as err:  # a device id the wire refuses: log it, keep managing the others
            log.warning("device_event_rejected", device_id=device_id, kind=kind, error=str(err))
        except AgentStoppedError:
            raise asyncio.CancelledError from None


def _identity_fields(identity: DeviceIdentity) -> dict[str, str]:
    return {k: v for k, v in identity.model_dump(exclude_none=True).items() if isinstance(v, str)}


def _udev_context() -> Any:
    import pyudev

    return pyudev.Context()


class KeyboardLister:
    """USB keyboards from udev's database: barcode scanners in keyboard-wedge (HID) mode.

    Only keyboards (``ID_INPUT_KEYBOARD``) on USB with a ``/dev/input/event*`` node are listed;
    a scanner profile with ``interface = "hid"`` claims it by its USB ids, any other keyboard is
    reported once as unknown. ``context_factory`` is a seam for tests (pyudev's ``Context``).
    """

    def __init__(self, *, context_factory: Callable[[], Any] = _udev_context) -> None:
        self._context_factory = context_factory

    def list_ports(self) -> list[PortInfo]:
        """Every USB keyboard present now, by its event node, with its USB identity."""
        found: list[PortInfo] = []
        for device in self._context_factory().list_devices(subsystem="input"):
            props = device.properties
            node = props.get("DEVNAME", "")
            if not node.startswith("/dev/input/event") or props.get("ID_INPUT_KEYBOARD") != "1":
                continue
            if props.get("ID_BUS") != "usb" or not props.get("ID_VENDOR_ID"):
                continue
            found.append(
                PortInfo(
                    address=node,
                    identity=DeviceIdentity(
                        vendor_id=props["ID_VENDOR_ID"].lower(),
                        product_id=(props.get("ID_MODEL_ID") or "").lower() or None,
                        serial_number=_short(props.get("ID_SERIAL_SHORT")),
                        manufacturer=_short(props.get("ID_VENDOR")),
                        product=_short(props.get("ID_MODEL")),
                        location=_short(props.get("ID_PATH")),
                    ),
                )
            )
        return found


def default_lister(hotplug: HotplugConfig, catalog: ProfileCatalog) -> PortLister:
    """This gateway's port listers: USB serial ports, USB keyboards (HID scanners), and every family's own."""
    listers: list[PortLister] = [SerialPortLister()]
    try:
        import pyudev  # noqa: F401 - Linux only: without it, HID scanners are configured by address
    except ImportError:
        log.info("hid_hotplug_unavailable", reason="pyudev is not installed")
    else:
        listers.append(KeyboardLister())
    for family in families():
        if family.port_lister is not None:
            listers.append(family.port_lister(catalog.of_kind(family.kind), hotplug))
    return CombinedLister(listers)
