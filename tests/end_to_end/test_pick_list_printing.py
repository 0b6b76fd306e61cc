"""A restock pick list from the hub to paper, once, while the store's printer loses power twice mid-job.

Every part is real: the hub (uvicorn, its consumer and its command sender) over a real Mosquitto,
the agent with its durable print queue, the shelf controller's firmware on a pty, the printer
driver on loopback TCP to the printer emulator, and the tests' own ESC/POS decoder reading what
the emulator printed.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert, select

from device_drivers.printer.simulator import EmulatedPrinter, TcpPrinter
from device_drivers.shelf.simulator import ShelfSimulator, SlotSpec
from device_drivers.simulated.pty import PtyPort
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from hub.app import serve
from hub.catalog.models import Shelf, Sku, Slot, StoreProfile
from hub.db.engine import create_engine, session_factory
from hub.db.models import OutgoingCommand
from hub.fleet.commands import add_gateway
from hub.inventory.models import RestockTask
from hub.settings import HubSettings
from launcher.broker import free_port
from storegate.mqtt import MqttSettings
from tests.conftest import eventually
from tests.device_drivers.printer.escpos_text import decode

STORE, GATEWAY = "store-0031", "gw-1"
SLOT_UNIT_G = 250.0
# Bytes of the job that reach the printer before its power goes: the start of the pick list.
JOB_BYTES_BEFORE_THE_CUT = 100


async def _seed_catalog(database_url: str) -> None:
    """One shelf whose slot 1 holds ten packs of biscuits and wants at least three."""
    engine = create_engine(database_url)
    now = datetime.now(UTC)
    try:
        async with session_factory(engine)() as session, session.begin():
            await session.execute(
                insert(Sku).values(
                    sku_id="A", gtin=None, name="Biscuits", pack_size=6, price=Decimal("1.50"), currency="GBP",
                    updated_at=now,
                )
            )  # fmt: skip
            hours = {day: ["00:00-24:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
            await session.execute(
                insert(StoreProfile).values(
                    store_id=STORE, name="Market Street", timezone="Europe/London", currency="GBP",
                    opening_hours=hours, updated_at=now,
                )
            )  # fmt: skip
            await session.execute(insert(Shelf).values(store_id=STORE, shelf_id="shelf-1"))
            await session.execute(
                insert(Slot).values(
                    store_id=STORE, shelf_id="shelf-1", slot=1, sku_id="A", capacity=10, min_quantity=3, updated_at=now
                )
            )
    finally:
        await engine.dispose()


async def _task_and_command(database_url: str) -> tuple[RestockTask | None, OutgoingCommand | None]:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            task = (await session.execute(select(RestockTask))).scalars().first()
            command = (await session.execute(select(OutgoingCommand))).scalars().first()
            return task, command
    finally:
        await engine.dispose()


async def test_a_pick_list_prints_once_while_the_printer_loses_power_twice_mid_job(
    tmp_path: Path, mqtt_settings: MqttSettings
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}"
    await add_gateway(database_url, f"{STORE}/{GATEWAY}", by="test-operator")
    await _seed_catalog(database_url)
    printer = EmulatedPrinter()
    port = PtyPort().open()
    shelf = ShelfSimulator(
        port=port, slots=[SlotSpec(SLOT_UNIT_G, 10)] + [SlotSpec(SLOT_UNIT_G)] * 7, rng=random.Random(7)
    )
    async with TcpPrinter(printer) as tcp:
        agent_config = AgentConfig.model_validate(
            {
                "store_id": STORE,
                "gateway_id": GATEWAY,
                "mqtt": mqtt_settings.model_dump(),
                "outbox": {"path": tmp_path / "outbox.sqlite3"},
                "print_jobs": {"retry_initial_s": 0.2, "retry_max_s": 1.0},
                "hotplug": {"enabled": False},
                "devices": [
                    {
                        "device_id": "shelf-1",
                        "profile": "storegate-shelf-v1",
                        "address": port.port,
                        "settings": {"slots": {"1": {"unit_weight_g": SLOT_UNIT_G}}, "stock_interval_s": 1.0},
                    },
                    {
                        "device_id": "receipt-printer",
                        "profile": "network-printer-9100",
                        "address": tcp.address,
                        # No idle status polls: the bytes before a job are the driver's own status checks.
                        "settings": {"status_interval_s": 3600},
                    },
                ],
            }
        )
        http_port = free_port()
        hub_stop, agent_stop = asyncio.Event(), asyncio.Event()
        hub_task = asyncio.create_task(
            serve(HubSettings(database_url=database_url, mqtt=mqtt_settings, http_port=http_port), stop=hub_stop)
        )
        shelf_task = asyncio.create_task(shelf.run())
        agent = EdgeAgent(config=agent_config)
        agent_task = asyncio.create_task(agent.run(agent_stop))
        try:
            # The driver checks the printer's status when it opens; a job is preceded by the same check.
            async def driver_opened() -> bool:
                return len(printer.received) > 0

            async def power_cut() -> bool:
                return not printer.powered

            await eventually(driver_opened, timeout=30, what="the printer driver to open")
            check = len(printer.received)
            printer.power_off_after(check + JOB_BYTES_BEFORE_THE_CUT)

            async def shelf_configured() -> bool:
                return bool(shelf.commands)

            await eventually(shelf_configured, timeout=30, what="the shelf driver to configure its controller")
            shelf.pick(1, 8)  # two packs left, below the slot's minimum of three: the hub opens a restock task

            for cut in (1, 2):
                await eventually(power_cut, timeout=20, what=f"power cut {cut} mid-job")
                assert printer.receipts == []  # nothing was cut off the roll: each copy so far is torn
                if cut == 1:
                    # After power returns the driver opens (one check), then the queue prints (another).
                    printer.power_off_after(2 * check + JOB_BYTES_BEFORE_THE_CUT)
                await tcp.power_on()

            async def printed() -> tuple[RestockTask, OutgoingCommand] | None:
                task, command = await _task_and_command(database_url)
                if task is None or command is None or task.print_status != "printed":
                    return None
                return task, command

            found = await eventually(printed, timeout=60, what="the restock task to read printed")
            assert found is not None
            task, command = found
        finally:
            agent_stop.set()
            hub_stop.set()
            shelf_task.cancel()
            await asyncio.gather(agent_task, hub_task, shelf_task, return_exceptions=True)
            port.unplug()

    # One strip of paper, cut once: two torn starts of the pick list, then the one whole copy.
    assert len(printer.receipts) == 1
    assert printer.partial == bytearray()
    lines = decode(printer.receipts[0]).lines
    # A torn copy ends mid-line, so the next copy's first words may share its line.
    assert lines[0] == "RESTOCK"  # the first attempt's torn start
    assert sum("REPRINT (attempt 2)" in line for line in lines) == 1
    assert sum("REPRINT (attempt 3)" in line for line in lines) == 1
    whole = lines[next(i for i, line in enumerate(lines) if "REPRINT (attempt 3)" in line) :]
    task_lines = command.args["lines"]
    assert isinstance(task_lines, list)
    assert all(line in whole for line in task_lines)
    assert [line for line in lines if line in task_lines[3:]] == task_lines[3:]  # the SKU to the task: once
    assert f"Task {task.task_id}" in whole
    assert "BRING 8" in whole
    assert task.print_detail is not None
    assert "attempt 3" in task.print_detail
    assert command.status == "done"
