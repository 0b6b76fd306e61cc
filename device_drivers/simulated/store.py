"""A small simulated store: real device protocols on ptys, with customers, a till and a freezer door.

The demo runs this in a process of its own (``storegate simulate-store``); the agent then
opens the simulated devices exactly as it opens real ones: the shelf controller and the
till's scanner on serial ports, the chiller and freezer sensors and the freezer's door
contact on RS-485 (Modbus RTU, through null-modem pty pairs), and a 1-Wire probe in the
back room that appears in a sysfs-like tree, where hot-plug finds it.

What happens: customers take items from (and put items back on) the shelf; the till scans
real baskets (the shared retail data, as Code 128 stock codes); every few minutes the
freezer door is left open for a while, the freezer warms up until the gateway's local
alarm goes off, and cools down again once the door is shut. The back office's receipt
printer is an ESC/POS emulator on a loopback TCP port (a network printer), where the hub's
restock pick lists come out; a camera over the entrance watches a looping video of shoppers
walking in and out, and counts them across its line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog

from device_drivers.barcode.simulator import BasketReplayer, PlannedScan, SimulatedSerialScanner
from device_drivers.camera.simulator import Clip, Walker
from device_drivers.door.simulator import SimulatedDoorModule
from device_drivers.modbus_sensor.profile import ModbusSensorProfile
from device_drivers.modbus_sensor.simulator import ModbusSensorSimulator
from device_drivers.onewire.simulator import OneWireSimulator
from device_drivers.printer.simulator import EmulatedPrinter, TcpPrinter
from device_drivers.profiles import load_catalog
from device_drivers.shelf.simulator import ShelfSimulator, SlotSpec
from device_drivers.simulated.climate import ClimateSample, climate_series
from device_drivers.simulated.pty import NullModem, PtyPort

log = structlog.get_logger(__name__)

# Real products of the shared retail data (its first invoice), with plausible unit weights.
SHELF_SKUS: Final = (
    ("85123A", 280.0),
    ("71053", 640.0),
    ("84406B", 110.0),
    ("84029G", 520.0),
    ("84029E", 480.0),
    ("22752", 850.0),
    ("21730", 310.0),
    ("22633", 90.0),
)
# The entrance camera's clip: 20 s at 15 fps, looped; the store is right of the line at x = 320.
ENTRANCE_CLIP: Final = Clip(
    frames=300,
    walkers=[
        Walker(10, 60, (40, 300), (600, 300)),
        Walker(80, 130, (600, 240), (40, 240)),
        Walker(150, 200, (60, 340), (580, 340)),
        Walker(220, 270, (40, 280), (600, 280)),
    ],
)
ENTRANCE_LINE: Final = {"name": "entrance", "start": [320, 0], "end": [320, 480], "inside": [600, 240]}
# Valid EAN-13 codes scanned when the retail data is not on this machine.
FALLBACK_CODES: Final = ("5449000039231", "4007817327098", "9780140013993", "5000213101025", "8480010001136")
# A full slot's load: below the shelf controller's 5 kg cells, with room for a resting hand.
SLOT_LOAD_G: Final = 4000.0
# The freezer warms this much per sample (a Modbus poll, 2 s) while its door is open, about
# 2 Cel a minute, and cools back at half that: past -18 Cel within the door's 150 s.
FREEZER_WARMING_C: Final = 0.06


@dataclass(frozen=True, slots=True)
class SimulatedDevice:
    """One simulated device as the agent config names it."""

    device_id: str
    profile: str
    address: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class DoorState:
    """The freezer door, shared by the door contact and the freezer's thermometer."""

    open: bool = False
    warming_c: float = 0.0


def fill_of(unit_weight_g: float) -> int:
    """Items a slot holds when full: at most 12, and well within the shelf's 5 kg cells."""
    return max(1, min(12, int(SLOT_LOAD_G // unit_weight_g)))


def _freezer_samples(door: DoorState, *, seed: int) -> Iterator[ClimateSample]:
    """The freezer's climate: a room's recorded series moved to -20 Cel, warming while the door is open."""
    for sample in climate_series(offset_c=-41.0, seed=seed):
        if door.open:
            door.warming_c += FREEZER_WARMING_C
        else:
            door.warming_c = max(0.0, door.warming_c - FREEZER_WARMING_C / 2)
        yield ClimateSample(round(sample.temperature_c + door.warming_c, 2), sample.humidity_pct)


def _till_scans(rng: random.Random) -> Iterator[PlannedScan]:
    try:
        yield from BasketReplayer(item_gap_s=2.0, basket_gap_s=8.0).scans()
    except FileNotFoundError:
        log.info("retail_data_missing", fallback="a few EAN-13 codes")
        while True:
            yield PlannedScan(code=rng.choice(FALLBACK_CODES), aim="]E0", delay_s=rng.uniform(3.0, 10.0))


class SimulatedStore:
    """The store's simulated devices and what happens in the store; ``async with`` it, then ``await run()``."""

    def __init__(
        self,
        *,
        workdir: Path,
        seed: int = 0,
        door_every_s: float = 240.0,
        door_open_s: float = 150.0,
        customers_per_minute: float = 4.0,
    ) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.door_every_s = door_every_s
        self.door_open_s = door_open_s
        self.customers_per_minute = customers_per_minute
        self.door = DoorState()
        self.devices: list[SimulatedDevice] = []
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._door_module: SimulatedDoorModule | None = None
        self._w1: OneWireSimulator | None = None
        self.printer: TcpPrinter | None = None
        self.w1_root = workdir / "w1" / "devices"

    async def __aenter__(self) -> SimulatedStore:
        stack = self._stack
        catalog = load_catalog()
        xy_md02 = catalog.get("xy-md02")
        assert isinstance(xy_md02, ModbusSensorProfile)

        shelf_port = await stack.enter_async_context(PtyPort())
        shelf = ShelfSimulator(
            port=shelf_port,
            slots=[
                SlotSpec(unit_weight_g=weight, items=fill_of(weight), max_items=fill_of(weight))
                for _, weight in SHELF_SKUS
            ],
            rng=random.Random(self.rng.random()),
            customers_per_minute=self.customers_per_minute,
            serial="SGS-0001-DEMO",
        )
        self._spawn(shelf.run(), "shelf")
        self.devices.append(
            SimulatedDevice(
                device_id="shelf-a1",
                profile="storegate-shelf-v1",
                address=shelf_port.port,
                settings={
                    "slots": {
                        str(slot): {"sku": sku, "unit_weight_g": weight}
                        for slot, (sku, weight) in enumerate(SHELF_SKUS, start=1)
                    },
                    "stock_interval_s": 60.0,
                },
            )
        )

        till_port = await stack.enter_async_context(PtyPort())
        till = SimulatedSerialScanner(
            port=till_port, terminator="crlf", aim_ids=True, source=_till_scans(random.Random(self.rng.random()))
        )
        self._spawn(till.run(), "till scanner")
        self.devices.append(
            SimulatedDevice(
                device_id="till-1-scanner",
                profile="zebra-ds-cdc",
                address=till_port.port,
                settings={"mode": "checkout"},
            )
        )

        chiller = ModbusSensorSimulator(profile=xy_md02, offset_c=-17.5, seed=self.rng.randrange(1000))
        await stack.enter_async_context(chiller)
        self.devices.append(
            SimulatedDevice(
                device_id="chiller-1",
                profile="xy-md02",
                address=chiller.port,
                settings={
                    "zone": "chiller-1",
                    "poll_interval_s": 2.0,
                    "alarms": [{"quantity": "temperature", "high": 5.0, "low": 0.0, "delay_s": 60.0}],
                },
            )
        )

        freezer_climate = _freezer_samples(self.door, seed=self.rng.randrange(1000))
        freezer = ModbusSensorSimulator(profile=xy_md02, samples=freezer_climate)
        await stack.enter_async_context(freezer)
        self.devices.append(
            SimulatedDevice(
                device_id="freezer-1",
                profile="xy-md02",
                address=freezer.port,
                settings={
                    "zone": "freezer-1",
                    "poll_interval_s": 2.0,
                    "alarms": [{"quantity": "temperature", "high": -18.0, "delay_s": 20.0, "hysteresis": 1.0}],
                },
            )
        )

        door_cable = await stack.enter_async_context(NullModem())
        door_module = SimulatedDoorModule(port=door_cable.device_port)
        door_module.set_input(0, True)  # the contact conducts while the door is closed
        await stack.enter_async_context(door_module)
        self._door_module = door_module
        self.devices.append(
            SimulatedDevice(
                device_id="freezer-1-door",
                profile="door-modbus-di",
                address=door_cable.port,
                settings={"zone": "freezer-1", "input_index": 0},
            )
        )

        # The back office's receipt printer: a network printer, given by address (hot-plug finds only USB ones).
        self.printer = await stack.enter_async_context(TcpPrinter(EmulatedPrinter()))
        self.devices.append(
            SimulatedDevice(device_id="receipt-printer", profile="network-printer-9100", address=self.printer.address)
        )

        # The entrance camera reads a video file (an IP camera's stream in a real store); it counts footfall and
        # reports motion only at night, as a store's cameras are armed outside opening hours.
        entrance = await asyncio.to_thread(ENTRANCE_CLIP.write, self.workdir / "entrance.avi")
        self.devices.append(
            SimulatedDevice(
                device_id="entrance-cam",
                profile="ip-camera-rtsp",
                address=str(entrance),
                settings={
                    "source": str(entrance),
                    "loop": True,
                    "footfall": ENTRANCE_LINE,
                    "armed": {
                        "time_zone": "Europe/London",
                        "windows": [
                            {
                                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                "start": "22:30",
                                "end": "06:30",
                            }
                        ],
                    },
                },
            )
        )

        # Found by the agent's hot-plug (hotplug.w1_root), not configured.
        self._w1 = OneWireSimulator(root=self.w1_root, interval_s=5.0)
        self._w1.add_probe(serial="0316a279b0ff", offset_c=-1.0, seed=self.rng.randrange(1000))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stack.aclose()

    def _spawn(self, job: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(job, name=f"simulated {name}"))

    def write_manifest(self, path: Path) -> None:
        """Write the devices (id, profile, address, settings) and the 1-Wire root as JSON, atomically."""
        document = {"devices": [asdict(d) for d in self.devices], "w1_root": str(self.w1_root)}
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document, indent=2))
        os.replace(temporary, path)

    async def run(self) -> None:
        """What happens in the store, until cancelled."""
        await asyncio.gather(self._freezer_door(), self._back_room(), self._print_room())

    async def _freezer_door(self) -> None:
        assert self._door_module is not None
        while True:
            await asyncio.sleep(self.door_every_s)
            log.info("simulated_freezer_door_left_open", open_s=self.door_open_s)
            self.door.open = True
            self._door_module.set_input(0, False)
            await asyncio.sleep(self.door_open_s)
            self.door.open = False
            self._door_module.set_input(0, True)
            log.info("simulated_freezer_door_closed")

    async def _print_room(self) -> None:
        """Say in the log when a pick list came out of the printer, so the demo shows where it went."""
        assert self.printer is not None
        printed = 0
        while True:
            await asyncio.sleep(2.0)
            receipts = self.printer.printer.receipts
            if len(receipts) > printed:
                log.info("simulated_printer_printed", receipts=len(receipts) - printed, bytes=len(receipts[-1]))
                printed = len(receipts)

    async def _back_room(self) -> None:
        assert self._w1 is not None
        while True:
            await asyncio.sleep(self._w1.interval_s)
            self._w1.step()
