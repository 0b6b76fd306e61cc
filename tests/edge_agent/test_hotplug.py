"""Hot-plug: ports that come and go become drivers that start and stop, with lifecycle events and stable ids."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Literal, Self
from uuid import UUID

import pytest

from device_drivers.base import DeviceUnavailableError, DriverHealth, DriverState, Reading
from device_drivers.onewire.discovery import OneWireLister
from device_drivers.ports import PortInfo
from device_drivers.profile_base import ProfileBase, UsbMatch
from device_drivers.profiles import ProfileCatalog, load_catalog
from edge_agent.config import DeviceConfig, HotplugConfig, ProfiledDeviceConfig
from edge_agent.hotplug import (
    CombinedLister,
    DeviceManager,
    KeyboardLister,
    UdevWakeups,
    default_lister,
    diff_ports,
)
from edge_agent.timing import Backoff
from storegate import wire
from storegate.clock import SystemClock
from storegate.wire import DeviceIdentity
from tests.edge_agent.conftest import T0
from tests.hub.conftest import until


class FakeProfile(ProfileBase):
    """A profile of any kind: the manager only matches USB ids and passes the id on."""

    kind: Literal["barcode"] = "barcode"


SCANNER = FakeProfile(id="test-scanner", vendor="Acme", model="S1", usb=[UsbMatch(vendor_id="0c2e", product_id="0b61")])
ANY_ACME = FakeProfile(id="acme-any", vendor="Acme", model="any", usb=[UsbMatch(vendor_id="0c2e")])
CATALOG = ProfileCatalog(profiles={p.id: p for p in (SCANNER, ANY_ACME)})


def scanner_port(address: str, serial: str | None = "SN1", pid: str = "0b61", location: str = "1-1.2") -> PortInfo:
    return PortInfo(
        address=address,
        identity=DeviceIdentity(vendor_id="0c2e", product_id=pid, serial_number=serial, location=location),
    )


class Lister:
    """The test's port list: what the test plugs in."""

    def __init__(self) -> None:
        self.ports: list[PortInfo] = []

    def list_ports(self) -> list[PortInfo]:
        return list(self.ports)


class PluggedDriver:
    """A driver that reads one reading from its port, then waits until it is unplugged."""

    opened: list[tuple[str, str]] = []  # (device id, address) of every open

    def __init__(self, config: ProfiledDeviceConfig, identity: DeviceIdentity | None) -> None:
        self.config = config
        self.identity = identity
        self.unplugged = asyncio.Event()

    async def __aenter__(self) -> Self:
        assert self.config.address is not None
        PluggedDriver.opened.append((self.config.device_id, self.config.address))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pass

    async def readings(self) -> AsyncIterator[Reading]:
        yield Reading(device_id=self.config.device_id, kind="scan.test", ts=T0, payload={"n": 1})
        await self.unplugged.wait()
        raise DeviceUnavailableError("gone")

    async def execute(self, command: wire.Command) -> wire.CommandResult:
        raise NotImplementedError

    def health(self) -> DriverHealth:
        return DriverHealth(state=DriverState.UP)


class Recorder:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def __call__(self, reading: Reading) -> None:
        wire.Event(  # what the agent checks before storing: every lifecycle payload must be valid
            event_id=UUID(int=1),
            store_id="s",
            gateway_id="g",
            stream=UUID(int=1),
            seq=1,
            device_id=reading.device_id,
            kind=reading.kind,
            ts=reading.ts,
            payload=reading.payload,
        )
        self.readings.append(reading)

    def kinds(self, device_id: str) -> list[str]:
        return [r.kind for r in self.readings if r.device_id == device_id]


def manager(lister: Lister, recorder: Recorder, devices: list[DeviceConfig] | None = None) -> DeviceManager:
    def build(config: DeviceConfig, identity: DeviceIdentity | None) -> PluggedDriver:
        assert isinstance(config, ProfiledDeviceConfig)
        return PluggedDriver(config, identity)

    return DeviceManager(
        devices=devices or [],
        build=build,
        catalog=CATALOG,
        record=recorder,
        backoff=Backoff(initial_s=0.01, max_s=0.05),
        clock=SystemClock(),
        rng=random.Random(1),
        committed_mark=lambda device_id: None,
        hotplug=HotplugConfig(watch="poll", poll_interval_s=30.0),  # the test wakes every scan itself
        lister=lister,
    )


async def scanned(devices: DeviceManager, count: int) -> None:
    """One more scan, seeing the ports as they are now; ``count`` scans in all at least."""
    await devices.scan_now()
    assert devices.scans >= count


def test_diff_ports_sees_arrivals_departures_and_identity_changes() -> None:
    a, b = scanner_port("/dev/ttyACM0"), scanner_port("/dev/ttyACM1", serial="SN2")
    b_other_device = scanner_port("/dev/ttyACM1", serial="SN3")
    changes = diff_ports([a, b], [a, b_other_device])
    assert changes.arrived == (b_other_device,)
    assert changes.left == (b,)
    assert diff_ports([a], [a]).arrived == diff_ports([a], [a]).left == ()


def test_the_most_specific_profile_wins() -> None:
    assert CATALOG.match(scanner_port("/dev/ttyACM0")) is SCANNER
    assert CATALOG.match(scanner_port("/dev/ttyACM0", pid="9999")) is ANY_ACME
    assert CATALOG.match(PortInfo(address="/dev/ttyUSB0", identity=DeviceIdentity(vendor_id="1a86"))) is None


def test_a_failing_lister_does_not_hide_the_others() -> None:
    class Broken:
        def list_ports(self) -> list[PortInfo]:
            raise OSError("sysfs unreadable")

    good = Lister()
    good.ports = [scanner_port("/dev/ttyACM0")]
    assert CombinedLister([Broken(), good]).list_ports() == good.ports


async def test_plug_unplug_and_replug_elsewhere_keeps_the_device_id() -> None:
    lister, recorder = Lister(), Recorder()
    devices = manager(lister, recorder)
    task = asyncio.create_task(devices.run())
    try:
        await scanned(devices, 1)
        assert devices.device_ids == []
        lister.ports = [scanner_port("/dev/ttyACM0")]
        await scanned(devices, 2)
        key = "usb-0c2e:0b61-SN1"
        assert devices.device_ids == [key]
        await until(lambda: recorder.kinds(key) == ["device.attached", "scan.test"], what="attached, then its scan")
        attached = recorder.readings[0].payload
        assert attached["profile"] == "test-scanner"
        assert attached["address"] == "/dev/ttyACM0"
        assert attached["identity"] == {
            "vendor_id": "0c2e",
            "product_id": "0b61",
            "serial_number": "SN1",
            "location": "1-1.2",
        }

        lister.ports = []
        await scanned(devices, 3)
        assert devices.device_ids == []
        assert recorder.kinds(key)[-1] == "device.detached"
        assert recorder.readings[-1].payload == {"reason": "unplugged", "address": "/dev/ttyACM0"}

        # The same scanner in another USB socket: another address and location, the same id.
        lister.ports = [scanner_port("/dev/ttyACM4", location="1-1.4")]
        await scanned(devices, 4)
        assert devices.device_ids == [key]
        await until(lambda: recorder.kinds(key).count("device.attached") == 2, what="attached again")
        assert (key, "/dev/ttyACM4") in PluggedDriver.opened
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_unknown_device_is_reported_once_with_its_identifiers() -> None:
    lister, recorder = Lister(), Recorder()
    devices = manager(lister, recorder)
    stranger = PortInfo(
        address="/dev/ttyUSB0",
        identity=DeviceIdentity(vendor_id="1a86", product_id="7523", product="USB Serial", location="1-1.3"),
    )
    task = asyncio.create_task(devices.run())
    try:
        lister.ports = [stranger]
        for n in range(1, 4):
            await scanned(devices, n)
        key = "port-1-1.3"
        assert recorder.kinds(key) == ["device.unknown"]
        identity = recorder.readings[0].payload["identity"]
        assert isinstance(identity, dict)
        assert identity["vendor_id"] == "1a86"
        assert devices.device_ids == []
        # Unplugged and plugged in again: reported again, so the technician sees it is back.
        lister.ports = []
        await scanned(devices, 4)
        lister.ports = [stranger]
        await scanned(devices, 5)
        assert recorder.kinds(key) == ["device.unknown", "device.unknown"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_configured_identity_gives_its_id_and_profile() -> None:
    lister, recorder = Lister(), Recorder()
    till = ProfiledDeviceConfig(
        device_id="till-2-scanner", profile="acme-any", identity="usb-0c2e:0b61-SN9", settings={"mode": "checkout"}
    )
    devices = manager(lister, recorder, devices=[till])
    task = asyncio.create_task(devices.run())
    try:
        await scanned(devices, 1)
        assert devices.device_ids == []  # not started before it is plugged in
        lister.ports = [scanner_port("/dev/ttyACM2", serial="SN9")]
        await scanned(devices, 2)
        assert devices.device_ids == ["till-2-scanner"]
        await until(lambda: "device.attached" in recorder.kinds("till-2-scanner"), what="attached")
        assert recorder.readings[0].payload["profile"] == "acme-any"  # the config's, not the best USB match
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("watch", ["poll", "auto"])
async def test_fixed_devices_start_without_any_port_scan(watch: Literal["poll", "auto"]) -> None:
    recorder = Recorder()
    fixed = ProfiledDeviceConfig(device_id="bus-sensor", profile="acme-any", address="/dev/ttyUSB7")
    devices = manager(Lister(), recorder, devices=[fixed])
    task = asyncio.create_task(devices.run())
    try:
        await until(lambda: recorder.kinds("bus-sensor") == ["device.attached", "scan.test"], what="fixed device")
        assert recorder.readings[0].payload["address"] == "/dev/ttyUSB7"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_one_wire_probes_are_found_by_family_code_and_come_and_go(tmp_path: Path) -> None:
    catalog = load_catalog()
    probe = tmp_path / "28-0316a279b0ff"
    probe.mkdir()
    (probe / "w1_slave").write_text("72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n")
    (tmp_path / "w1_bus_master1").mkdir()  # the bus master itself is no probe
    (tmp_path / "3a-00000012ab34").mkdir()  # a family no profile knows (a DS2413 switch)
    lister = default_lister(HotplugConfig(w1_root=tmp_path), catalog)
    w1 = [p for p in lister.list_ports() if p.address.startswith(str(tmp_path))]
    assert [(p.address, p.profile_hint) for p in w1] == [(str(probe), "ds18b20")]

    recorder = Recorder()
    devices = DeviceManager(
        devices=[],
        build=lambda config, identity: PluggedDriver(config, identity),  # type: ignore[arg-type]
        catalog=catalog,
        record=recorder,
        backoff=Backoff(initial_s=0.01, max_s=0.05),
        clock=SystemClock(),
        rng=random.Random(1),
        committed_mark=lambda device_id: None,
        hotplug=HotplugConfig(watch="poll", poll_interval_s=30.0, w1_root=tmp_path),
        lister=OneWireLister(root=tmp_path, profiles=[catalog.get("ds18b20")]),  # type: ignore[list-item]
    )
    task = asyncio.create_task(devices.run())
    try:
        await devices.scan_now()
        key = "dev-28-0316a279b0ff"  # named by the probe's ROM id, wherever it sits on the bus
        assert devices.device_ids == [key]
        await until(lambda: "device.attached" in recorder.kinds(key), what="the probe attached")
        assert recorder.readings[0].payload["profile"] == "ds18b20"
        shutil.rmtree(probe)
        await devices.scan_now()
        assert devices.device_ids == []
        assert recorder.kinds(key)[-1] == "device.detached"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class FakeUdevMonitor:
    """pyudev's Monitor at its lowest layer: a readable descriptor, and poll() returning queued events."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)

    def fileno(self) -> int:
        return self.read_fd

    def poll(self, timeout: float | None = None) -> object | None:
        try:
            return os.read(self.read_fd, 1) or None
        except BlockingIOError:
            return None

    def kernel_event(self) -> None:
        os.write(self.write_fd, b"e")


async def test_a_udev_event_wakes_the_scanner_at_once() -> None:
    fake = FakeUdevMonitor()
    wake = asyncio.Event()
    wakeups = UdevWakeups(wake, monitor_factory=lambda: fake)
    assert wakeups.start()
    try:
        assert not wake.is_set()
        fake.kernel_event()
        fake.kernel_event()
        await asyncio.wait_for(wake.wait(), 5)
        assert fake.poll() is None  # both events drained: the scan reads the state, not the events
    finally:
        wakeups.stop()
        os.close(fake.read_fd)
        os.close(fake.write_fd)


async def test_without_udev_the_manager_falls_back_to_polling() -> None:
    def no_netlink() -> object:
        raise OSError("netlink socket not permitted")

    assert not UdevWakeups(asyncio.Event(), monitor_factory=no_netlink).start()


async def test_a_failing_device_reports_one_error_per_outage_and_attaches_when_it_opens() -> None:
    recorder = Recorder()
    attempts = 0

    class FlakyDriver(PluggedDriver):
        async def __aenter__(self) -> Self:
            nonlocal attempts
            attempts += 1
            if attempts <= 3:
                raise DeviceUnavailableError(f"cannot open /dev/ttyUSB7 (attempt {attempts})")
            return await super().__aenter__()

    fixed = ProfiledDeviceConfig(device_id="bus-sensor", profile="acme-any", address="/dev/ttyUSB7")
    devices = DeviceManager(
        devices=[fixed],
        build=lambda config, identity: FlakyDriver(config, identity),  # type: ignore[arg-type]
        catalog=CATALOG,
        record=recorder,
        backoff=Backoff(initial_s=0.01, max_s=0.02),
        clock=SystemClock(),
        rng=random.Random(1),
        committed_mark=lambda device_id: None,
        hotplug=HotplugConfig(enabled=False),
        lister=None,
    )
    task = asyncio.create_task(devices.run())
    try:
        await until(lambda: "scan.test" in recorder.kinds("bus-sensor"), what="the device working at last")
        assert recorder.kinds("bus-sensor") == ["device.error", "device.attached", "scan.test"]
        error = recorder.readings[0].payload
        assert error["error"] == "cannot open /dev/ttyUSB7 (attempt 1)"
        assert error["failures"] == 1
        assert attempts == 4
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class FakeUdevDevice:
    def __init__(self, **properties: str) -> None:
        self.properties = properties


class FakeUdevContext:
    """pyudev's Context at its lowest layer: the devices of one subsystem with their udev properties."""

    def __init__(self, devices: list[FakeUdevDevice]) -> None:
        self.devices = devices

    def list_devices(self, *, subsystem: str) -> list[FakeUdevDevice]:
        assert subsystem == "input"
        return self.devices


def test_keyboard_wedge_scanners_are_listed_from_udev_and_match_their_hid_profile() -> None:
    scanner = FakeUdevDevice(
        DEVNAME="/dev/input/event5",
        ID_INPUT_KEYBOARD="1",
        ID_BUS="usb",
        ID_VENDOR_ID="05E0",
        ID_MODEL_ID="1200",
        ID_SERIAL_SHORT="21122B0077",
        ID_VENDOR="Zebra",
        ID_MODEL="Symbol_Bar_Code_Scanner",
        ID_PATH="pci-0000:00:14.0-usb-0:2:1.0",
    )
    devices = [
        scanner,
        FakeUdevDevice(DEVNAME="/dev/input/mouse0", ID_INPUT_MOUSE="1", ID_BUS="usb", ID_VENDOR_ID="046d"),
        FakeUdevDevice(DEVNAME="/dev/input/event1", ID_INPUT_KEYBOARD="1", ID_BUS="i8042"),  # the laptop's own
        FakeUdevDevice(DEVNAME="/dev/input/event9", ID_INPUT_MOUSE="1", ID_BUS="usb", ID_VENDOR_ID="046d"),
    ]
    ports = KeyboardLister(context_factory=lambda: FakeUdevContext(devices)).list_ports()
    assert len(ports) == 1
    (port,) = ports
    assert port.address == "/dev/input/event5"
    assert port.identity.vendor_id == "05e0"
    assert port.stable_key == "usb-05e0:1200-21122B0077"
    assert load_catalog().match(port) is not None
    assert load_catalog().match(port).id == "zebra-ds-hid-kbd"  # type: ignore[union-attr]
