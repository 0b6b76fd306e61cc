"""``storegate provision selftest``: real drivers against simulated firmware on ptys, a scripted technician.

The technician's acts are the simulators': a scan queued on the scanner, items put on the shelf, the door module's
input opened and closed. The walk must pass each device only on the right reading, and say why it failed otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from device_drivers.barcode.simulator import SimulatedSerialScanner
from device_drivers.camera.simulator import Clip
from device_drivers.door.simulator import SimulatedDoorModule
from device_drivers.onewire.simulator import OneWireSimulator
from device_drivers.printer.simulator import EmulatedPrinter, TcpPrinter
from device_drivers.shelf.simulator import ShelfSimulator, SlotSpec
from device_drivers.simulated.pty import NullModem, PtyPort
from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.status import write_status
from provisioning.selftest import Outcome, SelftestOptions, run_selftest, run_selftest_command
from tests.edge_agent.test_status import sample_status
from tests.hub.conftest import until
from tests.provisioning.conftest import Systemd

CODE = "4045787034318"


@dataclass
class Technician:
    """A scripted technician: does each device's act when told to, and keeps what was shown."""

    acts: dict[str, Callable[[str], Coroutine[Any, Any, None]]]
    told: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    doing: list[asyncio.Task[None]] = field(default_factory=list)

    async def ready(self, device_id: str, what: str) -> bool:
        return True

    async def instruct(self, device_id: str, text: str) -> None:
        self.told.append(text)
        act = self.acts.get(device_id)
        if act is not None:
            self.doing.append(asyncio.create_task(act(text)))

    def show(self, text: str) -> None:
        self.shown.append(text)


@dataclass
class Store:
    scanner: SimulatedSerialScanner
    shelf: ShelfSimulator
    door: SimulatedDoorModule
    printer: EmulatedPrinter
    devices: list[dict[str, Any]]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A scanner, a shelf (250 g items), a door module and a DS18B20 probe, running on ptys and a 1-Wire tree."""
    async with contextlib.AsyncExitStack() as stack:
        scanner_port = await stack.enter_async_context(PtyPort())
        shelf_port = await stack.enter_async_context(PtyPort())
        cable = await stack.enter_async_context(NullModem())
        scanner = SimulatedSerialScanner(port=scanner_port, terminator="crlf", aim_ids=True)
        shelf = ShelfSimulator(
            port=shelf_port, slots=[SlotSpec(unit_weight_g=250.0, items=2)] * 8, rng=random.Random(3)
        )
        door = SimulatedDoorModule(port=cable.device_port)
        door.set_input(0, True)  # closed: the contact conducts
        await stack.enter_async_context(door)
        printer = await stack.enter_async_context(TcpPrinter(EmulatedPrinter()))
        w1 = OneWireSimulator(root=tmp_path / "w1", interval_s=0.2)
        probe = w1.add_probe(serial="0316a279b0ff", offset_c=-1.0, seed=4)
        # Real video files, read by OpenCV as the camera driver reads a camera: a shop's view, and a lens covered.
        view = Clip(frames=30, fps=15.0).write(tmp_path / "view.avi")
        covered = Clip(frames=30, fps=15.0, happenings=[("covered", 0, 29)]).write(tmp_path / "covered.avi")
        tasks = [asyncio.create_task(job) for job in (scanner.run(), shelf.run(), w1.run())]
        try:
            yield Store(
                scanner=scanner,
                shelf=shelf,
                door=door,
                printer=printer.printer,
                devices=[
                    {"device_id": "till-1", "profile": "zebra-ds-cdc", "address": scanner_port.port},
                    {"device_id": "shelf-1", "profile": "storegate-shelf-v1", "address": shelf_port.port},
                    {"device_id": "door-1", "profile": "door-modbus-di", "address": cable.port},
                    {"device_id": "probe-1", "profile": "ds18b20", "address": str(probe)},
                    {"device_id": "printer-1", "profile": "network-printer-9100", "address": printer.address},
                    {"device_id": "cam-1", "profile": "ip-camera-rtsp", "address": str(view)},
                    {"device_id": "cam-2", "profile": "ip-camera-rtsp", "address": str(covered)},
                ],
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def config_of(tmp_path: Path, devices: list[dict[str, Any]]) -> AgentConfig:
    return AgentConfig.model_validate(
        {"store_id": "store-0042", "gateway_id": "gw-1", "outbox": {"path": tmp_path / "o.sq"}, "devices": devices}
    )


async def test_every_device_passes_on_the_right_act(tmp_path: Path, store: Store) -> None:
    async def scan(text: str) -> None:
        store.scanner.queue_scan(text.rsplit(" ", 1)[-1], aim="]E0")

    async def put_two_items(text: str) -> None:
        store.shelf.put(1, 2)  # 2 x 250 g: the known 500 g

    async def open_and_close(text: str) -> None:
        store.door.set_input(0, False)
        polled = store.door.requests
        await until(lambda: store.door.requests >= polled + 3, what="the driver polled the open door")
        store.door.set_input(0, True)

    technician = Technician({"till-1": scan, "shelf-1": put_two_items, "door-1": open_and_close})
    report = await run_selftest(
        config_of(tmp_path, store.devices), technician, SelftestOptions(step_timeout_s=15, code=CODE), ports=[]
    )
    outcomes = {result.device_id: (result.outcome, result.reason) for result in report.results}
    assert outcomes["till-1"] == (Outcome.PASSED, f"read {CODE} exactly")
    assert outcomes["shelf-1"][0] is Outcome.PASSED, outcomes
    assert outcomes["shelf-1"][1].startswith("slot 1 read +50")  # +500 g, within ± 15 g
    assert outcomes["door-1"] == (Outcome.PASSED, "reported opened, then closed")
    assert outcomes["probe-1"][0] is Outcome.PASSED, outcomes
    assert outcomes["probe-1"][1].endswith("Cel, plausible")
    assert outcomes["printer-1"][0] is Outcome.PASSED, outcomes
    assert outcomes["printer-1"][1].startswith("test page printed")
    assert len(store.printer.receipts) == 1  # the page came out
    assert outcomes["cam-1"][0] is Outcome.PASSED, outcomes
    assert outcomes["cam-1"][1].startswith("a still 640x480, not blank")
    assert outcomes["cam-2"][0] is Outcome.FAILED  # its lens covered
    assert outcomes["cam-2"][1].startswith("the still is blank (grey levels spread")
    assert outcomes["cam-2"][1].endswith("a covered lens, a dark room or a dead sensor? (within 15 s)")
    assert not report.passed  # one device failed: the report says so
    assert f"scan this code with till-1: {CODE}" in technician.told
    assert "put 500 g on slot 1 of shelf-1" in technician.told


async def test_a_wrong_code_a_missing_device_and_no_weight_fail_with_the_reason(tmp_path: Path, store: Store) -> None:
    async def scan_another(text: str) -> None:
        store.scanner.queue_scan("8480010001136", aim="]E0")

    devices = [
        store.devices[0],
        store.devices[1],
        {"device_id": "till-2", "profile": "zebra-ds-cdc", "identity": "usb-05e0:1701-GONE"},
        store.devices[4],
    ]
    store.printer.paper = "out"
    technician = Technician({"till-1": scan_another})  # and nothing is put on the shelf
    report = await run_selftest(
        config_of(tmp_path, devices), technician, SelftestOptions(step_timeout_s=3, code=CODE), ports=[]
    )
    outcomes = {result.device_id: (result.outcome, result.reason) for result in report.results}
    assert outcomes["till-1"] == (
        Outcome.FAILED,
        f"it read '8480010001136', not the code shown '{CODE}' (within 3 s)",
    )
    assert outcomes["shelf-1"][0] is Outcome.FAILED
    assert outcomes["shelf-1"][1].startswith("slot 1 read +0 g, not 500 g ± 15 g")
    assert outcomes["till-2"] == (
        Outcome.FAILED,
        "not plugged in: no device with identity usb-05e0:1701-GONE (storegate provision detect)",
    )
    assert outcomes["printer-1"][0] is Outcome.FAILED
    assert "paper" in outcomes["printer-1"][1]
    assert store.printer.receipts == []
    assert not report.passed


def test_the_command_keeps_the_report_for_the_hub_and_refuses_a_broken_config(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('store_id = "store-0042"\ngateway_id = "gw-1"\n')
    technician = Technician({})
    text, code = run_selftest_command(config, options=SelftestOptions(), prompter=technician, as_json=False)
    assert code == 0
    assert text.startswith("selftest PASSED: 0 passed, 0 failed, 0 skipped; report selftest-")
    (written,) = (tmp_path / "selftests" / "pending").glob("selftest-*.json")
    assert written.stat().st_mode & 0o777 == 0o600
    assert json.loads(written.read_text())["store_id"] == "store-0042"
    assert technician.shown == [
        f"1 report(s) kept in {tmp_path / 'selftests' / 'pending'}: set snapshots.hub_url (the hub's gateway "
        "listener) and the gateway's certificate (mqtt.cert_file) to send them"
    ]
    text, code = run_selftest_command(
        config, options=SelftestOptions(), prompter=technician, as_json=False, upload_only=True
    )
    assert code == 1  # still waiting
    config.write_text('store_id = "store-0042"\n')
    text, code = run_selftest_command(config, options=SelftestOptions(), prompter=technician, as_json=False)
    assert (code, "gateway_id: required, but missing: add it" in text) == (2, True)


def test_the_agent_service_is_stopped_for_the_walk_and_started_again_whatever_happens(
    tmp_path: Path, systemd: Systemd
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('store_id = "store-0042"\ngateway_id = "gw-1"\n')
    systemd.runs_agent()
    technician = Technician({})
    text, code = run_selftest_command(
        config, options=SelftestOptions(), prompter=technician, as_json=False, service=systemd.service
    )
    assert code == 0, text
    assert systemd.calls == [
        "is-active --quiet storegate-agent.service",
        "stop storegate-agent.service",
        "start storegate-agent.service",
    ]
    assert technician.shown[0] == (
        "stopping storegate-agent.service (it holds the devices); it starts again after the self-test"
    )
    assert technician.shown[-2] == "started storegate-agent.service again"

    # The technician gives up mid-walk (Ctrl-C): the agent is started again all the same.
    config.write_text(
        config.read_text() + '[[devices]]\ndevice_id = "till-1"\nprofile = "zebra-ds-cdc"\naddress = "/dev/null"\n'
    )

    class GivesUp(Technician):
        async def ready(self, device_id: str, what: str) -> bool:
            raise KeyboardInterrupt

    quitter = GivesUp({})
    with pytest.raises(KeyboardInterrupt):
        run_selftest_command(
            config, options=SelftestOptions(), prompter=quitter, as_json=False, service=systemd.service
        )
    assert systemd.calls[-2:] == ["stop storegate-agent.service", "start storegate-agent.service"]
    assert quitter.shown[-1] == "started storegate-agent.service again"

    # A stop that fails: no walk (the ports are held), said in words; a start that fails: said, with what to type.
    systemd.fails("stop")
    text, code = run_selftest_command(
        config, options=SelftestOptions(), prompter=technician, as_json=False, service=systemd.service
    )
    assert (code, text) == (
        2,
        "the self-test did not run: systemctl stop storegate-agent.service failed: Job for storegate-agent.service "
        "failed because the control process exited with error code.",
    )
    systemd.fails("start")
    text, code = run_selftest_command(
        config, options=SelftestOptions(step_timeout_s=1), prompter=technician, as_json=False, service=systemd.service
    )
    assert code == 1  # till-1 on /dev/null is no scanner
    assert (
        "the agent was not started again: systemctl start storegate-agent.service failed: Job for "
        "storegate-agent.service failed because the control process exited with error code.; start it by hand: "
        "sudo systemctl start storegate-agent.service"
    ) in technician.shown


def test_an_agent_run_by_hand_is_left_alone_and_the_walk_refused(tmp_path: Path, systemd: Systemd) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('store_id = "store-0042"\ngateway_id = "gw-1"\n')
    outbox = load_agent_config(config).outbox.path
    with outbox.open("w"):  # this process holds the outbox open, as a running agent does
        write_status(outbox.with_name(outbox.name + ".status.json"), sample_status(pid=os.getpid()))
        text, code = run_selftest_command(
            config, options=SelftestOptions(), prompter=Technician({}), as_json=False, service=systemd.service
        )
    assert (code, text) == (
        2,
        f"the agent runs (pid {os.getpid()}), not as the storegate-agent.service service, and holds the devices: "
        "stop it first, run the self-test, then start it again",
    )
    assert systemd.calls == ["is-active --quiet storegate-agent.service"]  # nothing stopped
