"""A USB printer that is busy, or power-cycled, comes back under the agent's supervisor without a restart."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from device_drivers.base import Driver, Reading
from device_drivers.ports import DeviceBinding
from device_drivers.printer.driver import PrinterDriver
from device_drivers.printer.profile import PrinterProfile, PrinterSettings
from device_drivers.printer.simulator import EmulatedPrinter, PtyPrinter
from device_drivers.printer.transport import PrinterLink, UsbLpLink
from edge_agent.config import DeviceConfig, ProfiledDeviceConfig
from edge_agent.devices import DeviceSupervisor
from edge_agent.timing import Backoff
from storegate.clock import SYSTEM_CLOCK
from storegate.wire import Command, EventKind
from tests.conftest import eventually
from tests.device_drivers.printer.escpos_text import decode
from tests.device_drivers.printer.test_driver import profile_for
from tests.device_drivers.printer.test_render import pick_list


class UsbPort:
    """A USB printer's device file: a link to the emulator's pty, gone while it is unplugged or off."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.printer = EmulatedPrinter()
        self.pty: PtyPrinter | None = None
        self.busy_opens = 0  # the next this many opens fail with EBUSY (CUPS has the printer)

    async def plug(self) -> None:
        self.pty = PtyPrinter(self.printer)
        await self.pty.__aenter__()
        os.symlink(self.pty.port, self.path)

    async def unplug(self) -> None:
        self.path.unlink(missing_ok=True)
        if self.pty is not None:
            await self.pty.close()
            self.pty = None

    def open(self, path: str, flags: int) -> int:
        if self.busy_opens > 0:
            self.busy_opens -= 1
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        return os.open(path, flags)


@pytest.fixture
async def usb(tmp_path: Path) -> AsyncIterator[UsbPort]:
    port = UsbPort(tmp_path / "lp0")
    await port.plug()
    try:
        yield port
    finally:
        await port.unplug()


def print_command(task_id: str) -> Command:
    return Command(
        command_id=uuid.uuid4(),
        store_id="s-001",
        gateway_id="gw-1",
        device_id="receipt-printer",
        name="print",
        args=pick_list(task_id=task_id),
        issued_at=datetime.now(UTC),
    )


async def test_busy_and_power_cycled_usb_printer_recovers_under_the_supervisor(usb: UsbPort) -> None:
    profile: PrinterProfile = profile_for("usb")
    usb.busy_opens = 2
    recorded: list[Reading] = []

    def link(profile: PrinterProfile, address: str) -> PrinterLink:
        return UsbLpLink(address=address, opener=usb.open)

    def factory(config: DeviceConfig) -> Driver:
        assert isinstance(config, ProfiledDeviceConfig)
        assert config.address is not None
        binding = DeviceBinding(device_id=config.device_id, address=config.address)
        settings = PrinterSettings(status_interval_s=0.05)
        return PrinterDriver(profile=profile, binding=binding, settings=settings, link_factory=link, cjk_font=None)

    async def record(reading: Reading) -> None:
        recorded.append(reading)

    config = ProfiledDeviceConfig(device_id="receipt-printer", profile="epson-tm-t20", address=str(usb.path))
    supervisor = DeviceSupervisor(
        config=config,
        factory=factory,
        record=record,
        backoff=Backoff(initial_s=0.01, max_s=0.05),
        clock=SYSTEM_CLOCK,
        rng=random.Random(1),
    )
    task = asyncio.create_task(supervisor.run())
    try:

        async def kinds() -> list[str]:
            return [r.kind for r in recorded]

        async def up() -> bool:
            return supervisor.up

        # Busy twice (one device.error for the outage), then open: attached, and its status.
        await eventually(up, what="the printer opened after being busy")
        await eventually(kinds, what="events")
        errors = [r for r in recorded if r.kind == EventKind.DEVICE_ERROR]
        assert len(errors) == 1
        assert "busy" in str(errors[0].payload["error"])
        assert (await supervisor.execute(print_command("rt-1"))).status == "done"

        # Power-cycled: the device file goes away and comes back; the supervisor opens it again.
        await usb.unplug()

        async def down() -> bool:
            return not supervisor.up

        await eventually(down, what="the printer seen gone")
        await usb.plug()
        await eventually(up, what="the printer opened again")
        assert (await supervisor.execute(print_command("rt-2"))).status == "done"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    tasks = [next(line for line in decode(r).lines if line.startswith("Task ")) for r in usb.printer.receipts]
    assert tasks == ["Task rt-1", "Task rt-2"]
    seen = [r.kind for r in recorded]
    assert seen.count(EventKind.DEVICE_ATTACHED) == 2
    assert EventKind.PRINTER_STATUS in seen
