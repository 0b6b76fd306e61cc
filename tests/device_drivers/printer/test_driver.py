"""The printer driver against the emulator: on a pty (serial, and as a usblp device file) and on loopback TCP.

Every check reads the paper: what the emulator printed, decoded by the tests' own decoder.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest

from device_drivers.base import (
    CommandNotSupportedError,
    DeviceNotReadyError,
    DeviceUnavailableError,
    DriverError,
    DriverState,
    Reading,
)
from device_drivers.ports import DeviceBinding
from device_drivers.printer.driver import PrinterDriver, create
from device_drivers.printer.errors import PrinterNotReadyError, PrintJobInvalidError
from device_drivers.printer.profile import PrinterProfile, PrinterSettings
from device_drivers.printer.render import parse_document, render, reprint_notice, text_width
from device_drivers.printer.simulator import EmulatedPrinter, PtyPrinter, TcpPrinter
from device_drivers.profiles import load_catalog
from storegate.wire import Command, EventKind, PrinterStatus
from tests.conftest import eventually
from tests.device_drivers.collect import collecting
from tests.device_drivers.printer.escpos_text import decode
from tests.device_drivers.printer.test_render import pick_list

Transport = Literal["serial", "usb", "network"]
TRANSPORTS: tuple[Transport, ...] = ("serial", "usb", "network")
DEVICE = "receipt-printer"
FAST = PrinterSettings(status_interval_s=0.05)


def profile_for(transport: Transport) -> PrinterProfile:
    """A shipped 80 mm profile on ``transport``, answering status within a short wait."""
    base = load_catalog().get("epson-tm-t20" if transport != "network" else "network-printer-9100")
    data = base.model_dump() | {"transport": transport, "status_timeout_s": 0.3}
    if transport == "network":
        data["usb"] = []
    profile = PrinterProfile.model_validate(data)
    return profile


def command(name: str, args: dict[str, Any] | None = None) -> Command:
    return Command(
        command_id=uuid.uuid4(),
        store_id="s-001",
        gateway_id="gw-1",
        device_id=DEVICE,
        name=name,
        args=args or {},
        issued_at=datetime.now(UTC),
    )


class Bench:
    """An emulated printer on one transport, and drivers for it."""

    def __init__(self, transport: Transport, tmp_path: Path) -> None:
        self.transport = transport
        self.printer = EmulatedPrinter()
        self.profile = profile_for(transport)
        self.tmp_path = tmp_path
        self.pty: PtyPrinter | None = None
        self.tcp: TcpPrinter | None = None
        self.link = tmp_path / "lp0"  # the usblp device file: a link to the pty, re-pointed on replug

    async def start(self) -> None:
        if self.transport == "network":
            self.tcp = TcpPrinter(self.printer)
            await self.tcp.__aenter__()
        else:
            self.pty = PtyPrinter(self.printer)
            await self.pty.__aenter__()
            if self.link.is_symlink():
                self.link.unlink()
            os.symlink(self.pty.port, self.link)

    @property
    def address(self) -> str:
        if self.tcp is not None:
            return self.tcp.address
        return str(self.link) if self.transport == "usb" else self.pty_port

    @property
    def pty_port(self) -> str:
        assert self.pty is not None
        return self.pty.port

    def driver(self, settings: PrinterSettings = FAST) -> PrinterDriver:
        binding = DeviceBinding(device_id=DEVICE, address=self.address)
        return PrinterDriver(profile=self.profile, binding=binding, settings=settings, cjk_font=None)

    async def power_off(self) -> None:
        """Power off: TCP closes and refuses, a serial printer goes silent, a USB printer's device file goes away."""
        if self.tcp is not None:
            await self.tcp.power_off()
        elif self.transport == "usb":
            assert self.pty is not None
            await self.pty.close()
            self.link.unlink()
        else:
            self.printer.power_off()

    async def power_on(self) -> None:
        if self.tcp is not None:
            await self.tcp.power_on()
        elif self.transport == "usb":
            self.printer.power_on()
            await self.start()  # a new device file at the same path
        else:
            self.printer.power_on()

    async def close(self) -> None:
        if self.tcp is not None:
            await self.tcp.close()
        if self.pty is not None:
            await self.pty.close()


@pytest.fixture(params=TRANSPORTS)
async def bench(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Bench]:
    made = Bench(request.param, tmp_path)
    await made.start()
    try:
        yield made
    finally:
        await made.close()


@asynccontextmanager
async def opened(bench: Bench, settings: PrinterSettings = FAST) -> AsyncIterator[PrinterDriver]:
    async with bench.driver(settings) as driver:
        yield driver


def printed_lines(printer: EmulatedPrinter) -> list[list[str]]:
    """The text of each receipt the emulator cut off."""
    return [decode(receipt).lines for receipt in printer.receipts]


async def until(probe: Callable[[], object], what: str) -> None:
    async def check() -> object:
        return probe()

    await eventually(check, timeout=10.0, interval=0.01, what=what)


async def test_a_pick_list_prints_once_and_reads_back_as_the_task(bench: Bench) -> None:
    async with opened(bench) as driver:
        result = await driver.execute(command("print", pick_list()))
    job = render(parse_document(pick_list()), bench.profile)
    assert result.status == "done"
    assert result.detail == f"printed pick_list for task rt-00042, {len(job.data)} bytes"
    # The paper shows the task's lines, as the hub worded them.
    (receipt,) = printed_lines(bench.printer)
    task = pick_list()["lines"]
    assert [line for line in receipt if line in task] == [line for line in task if text_width(line) <= 48]
    paper = decode(bench.printer.receipts[0])
    assert [m.data for m in paper.of("barcode")] == ["MILK-1L"]
    assert [m.data for m in paper.of("qr")] == ["rt-00042"]
    assert bench.printer.partial == bytearray()
    assert driver.jobs_printed == 1


@pytest.mark.parametrize(
    ("condition", "reason"),
    [("paper", "paper out"), ("cover", "cover open"), ("offline", "offline"), ("error", "autocutter error")],
)
async def test_a_printer_that_cannot_print_is_refused_before_anything_is_sent(
    bench: Bench, condition: str, reason: str
) -> None:
    async with opened(bench) as driver:
        if condition == "paper":
            bench.printer.paper = "out"
        elif condition == "cover":
            bench.printer.cover_open = True
        elif condition == "offline":
            bench.printer.online = False
        else:
            bench.printer.error = "autocutter"
        sent_before = len(bench.printer.received)
        assert driver.health().attention is None  # as far as the driver knows yet
        with pytest.raises(PrinterNotReadyError, match=rf"not ready \({reason}\): pick_list for task rt-00042 not"):
            await driver.execute(command("print", pick_list()))
        assert driver.health().attention == reason  # the agent's health names it until the printer is ready
        assert PrinterNotReadyError.retryable
        # Only status queries went out: nothing printed.
        assert set(bytes(bench.printer.received[sent_before:]).split(b"\x10\x04")) <= {
            b"",
            b"\x01",
            b"\x02",
            b"\x03",
            b"\x04",
        }
        assert bench.printer.receipts == []
        assert bench.printer.partial == bytearray()
        bench.printer.paper, bench.printer.cover_open, bench.printer.online, bench.printer.error = (
            "ok",
            False,
            True,
            None,
        )
        assert (await driver.execute(command("print", pick_list()))).status == "done"
    assert len(bench.printer.receipts) == 1


async def test_power_lost_mid_job_says_it_may_be_partly_printed(bench: Bench) -> None:
    async with opened(bench) as driver:
        bench.printer.power_off_after(300)  # TCP: the connection drops; pty: the printer goes silent
        with pytest.raises(DeviceUnavailableError, match="may be partly printed") as raised:
            await driver.execute(command("print", pick_list()))
        assert raised.value.retryable
        assert driver.health().state is DriverState.DOWN
    assert bench.printer.receipts == []
    assert 0 < len(bench.printer.partial) < len(render(parse_document(pick_list()), bench.profile).data)
    # What did come out is the start of the pick list, uncut.
    assert decode(bytes(bench.printer.partial)).lines[0] == "RESTOCK"


async def test_the_copy_printed_again_says_it_is_a_reprint(bench: Bench) -> None:
    async with opened(bench) as driver:
        bench.printer.power_off_after(300)
        with pytest.raises(DeviceUnavailableError):
            await driver.execute(command("print", pick_list()))
    await bench.power_off()
    await bench.power_on()
    async with opened(bench) as driver:
        result = await driver.execute(command("print", pick_list(attempt=2)))
    assert result.status == "done"
    # One strip of paper: the interrupted copy's start, then the whole reprint, headed as one.
    (receipt,) = printed_lines(bench.printer)
    assert receipt[0] == "RESTOCK"
    reprint = receipt[receipt.index("REPRINT (attempt 2): an earlier copy was") :]
    assert " ".join(reprint[:2]) == reprint_notice(2)
    assert "Task rt-00042" in reprint


async def test_status_readings_on_open_and_on_every_change(bench: Bench) -> None:
    async with opened(bench) as driver, collecting(driver) as reader:
        await until(lambda: len(reader.readings) >= 1, "the status on open")
        first = reader.readings[0]
        assert (first.kind, first.device_id) == (EventKind.PRINTER_STATUS, DEVICE)
        assert PrinterStatus.model_validate(first.payload) == PrinterStatus(online=True, paper="ok", cover_open=False)
        bench.printer.paper = "low"
        await until(lambda: len(reader.readings) >= 2, "paper low")
        bench.printer.paper, bench.printer.online = "out", False
        await until(lambda: len(reader.readings) >= 3, "paper out")
        bench.printer.cover_open = True
        await until(lambda: len(reader.readings) >= 4, "cover open")
        statuses = [PrinterStatus.model_validate(r.payload) for r in reader.readings]
        assert [s.paper for s in statuses] == ["ok", "low", "out", "out"]
        assert [s.online for s in statuses] == [True, True, False, False]
        assert statuses[-1].cover_open
        status = await driver.execute(command("status"))
        assert status.detail == "offline, paper out, cover open"
        assert len(reader.readings) == 4  # no change, no reading


async def test_a_printer_that_goes_away_ends_readings_and_comes_back_without_a_restart(bench: Bench) -> None:
    async with opened(bench) as driver, collecting(driver) as reader:
        await until(lambda: reader.readings, "the status on open")
        await bench.power_off()
        await until(lambda: reader.ended, "readings() to end")
        assert isinstance(reader.error, DeviceUnavailableError)
        assert driver.health().state is DriverState.DOWN
    # The supervisor reopens: refused while the printer is off, fine once it is back.
    with pytest.raises(DeviceUnavailableError):
        async with opened(bench):
            pass
    await bench.power_on()
    async with opened(bench) as driver:
        assert (await driver.execute(command("print", pick_list()))).status == "done"
    assert len(bench.printer.receipts) == 1


async def test_jobs_and_status_polls_never_interleave(bench: Bench) -> None:
    settings = PrinterSettings(status_interval_s=0.001)
    jobs = [pick_list(task_id=f"rt-{n}", name=f"Item {n}") for n in range(4)]
    async with opened(bench, settings) as driver, collecting(driver):
        results = await asyncio.gather(*(driver.execute(command("print", args)) for args in jobs))
    assert [r.status for r in results] == ["done"] * 4
    received = bytes(bench.printer.received)
    for args in jobs:  # each job arrived in one piece, with no status query inside it
        assert render(parse_document(args), bench.profile).data in received
    assert sorted(
        next(line for line in lines if line.startswith("Task ")) for lines in printed_lines(bench.printer)
    ) == [f"Task rt-{n}" for n in range(4)]


async def test_a_garbled_status_answer_is_counted_and_asked_again(bench: Bench) -> None:
    async with opened(bench) as driver:
        bench.printer.garble_answers = 1
        assert (await driver.execute(command("status"))).detail == "online, paper ok"
        assert driver.rejects.total == 1
        assert "bad_status_answer" in (driver.health().last_error or "")
        assert (await driver.execute(command("print", pick_list()))).status == "done"


async def test_bad_print_commands_fail_for_good_and_send_nothing(bench: Bench) -> None:
    async with opened(bench) as driver:
        sent = len(bench.printer.received)
        with pytest.raises(PrintJobInvalidError, match="pick_list: task_id: Field required"):
            await driver.execute(command("print", {"document": "pick_list", "shelf_id": "s", "slot": 1}))
        with pytest.raises(PrintJobInvalidError, match="unknown document 'menu'"):
            await driver.execute(command("print", {"document": "menu"}))
        with pytest.raises(CommandNotSupportedError):
            await driver.execute(command("tare"))
        assert len(bench.printer.received) == sent
        ping = await driver.execute(command("ping"))
        assert (ping.status, ping.detail) == ("done", "up, online, paper ok")


async def test_opening_a_printer_that_is_not_there(tmp_path: Path) -> None:
    profile = profile_for("usb")
    missing = PrinterDriver(
        profile=profile,
        binding=DeviceBinding(device_id=DEVICE, address=str(tmp_path / "lp7")),
        settings=FAST,
        cjk_font=None,
    )
    with pytest.raises(DeviceUnavailableError, match="No such file"):
        await missing.__aenter__()
    assert missing.health().state is DriverState.DOWN
    bad_address = create(
        profile=profile_for("network"), binding=DeviceBinding(device_id=DEVICE, address="host:port"), settings=FAST
    )
    with pytest.raises(DriverError, match="port is not a number"):
        await bad_address.__aenter__()


async def test_a_profile_naming_no_python_escpos_model_is_refused_on_open(bench: Bench) -> None:
    profile = bench.profile.model_copy(update={"escpos_profile": "TM-NOPE"})
    driver = PrinterDriver(
        profile=profile, binding=DeviceBinding(device_id=DEVICE, address=bench.address), settings=FAST, cjk_font=None
    )
    with pytest.raises(DriverError, match="escpos_profile 'TM-NOPE' is not python-escpos's") as raised:
        await driver.__aenter__()
    assert not raised.value.retryable
    assert bench.printer.received == bytearray()


async def test_a_silent_serial_port_is_not_a_printer() -> None:
    printer = EmulatedPrinter(powered=False)
    async with PtyPrinter(printer) as pty:
        driver = PrinterDriver(
            profile=profile_for("serial"),
            binding=DeviceBinding(device_id=DEVICE, address=pty.port),
            settings=FAST,
            cjk_font=None,
        )
        with pytest.raises(DeviceUnavailableError, match="did not answer DLE EOT 1"):
            await driver.__aenter__()


async def test_a_job_cut_short_ends_the_readings_at_once_so_the_printer_is_reopened(bench: Bench) -> None:
    # An hour between idle polls: only the failed job can tell readings() that the printer is gone.
    async with opened(bench, PrinterSettings(status_interval_s=3600)) as driver:
        readings = driver.readings()
        first = await anext(readings)
        assert first.payload["online"] is True

        async def next_reading() -> Reading:
            return await anext(readings)

        waiting = asyncio.create_task(next_reading())  # idle: waiting for a change or the next poll
        await asyncio.sleep(0)
        bench.printer.power_off_after(300)
        with pytest.raises(DeviceUnavailableError, match="may be partly printed"):
            await driver.execute(command("print", pick_list()))
        with pytest.raises(DeviceUnavailableError):
            await asyncio.wait_for(waiting, 10)
        # Asked again before the supervisor reopens it, the driver refuses without sending a byte.
        received = len(bench.printer.received)
        with pytest.raises(DeviceNotReadyError, match="not open"):
            await driver.execute(command("print", pick_list(attempt=2)))
        assert len(bench.printer.received) == received
