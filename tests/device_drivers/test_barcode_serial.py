"""Serial barcode scanners end to end: the simulated firmware on a real pty, the driver reading it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from device_drivers.barcode.driver import SerialBarcodeDriver, create
from device_drivers.barcode.profile import BarcodeProfile, BarcodeSettings
from device_drivers.barcode.simulator import BasketReplayer, SimulatedSerialScanner, retail_path
from device_drivers.base import DeviceUnavailableError, DriverState, Reading
from device_drivers.ports import DeviceBinding
from device_drivers.profiles import load_catalog, parse_profile
from device_drivers.simulated.pty import PtyPort
from storegate.wire import PAYLOAD_MODELS, Scan
from tests.clocks import FakeClock
from tests.conftest import eventually
from tests.device_drivers.test_barcode_validator import scanner_text, zxing_rows

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
GS = "\x1d"


def profile(**overrides: Any) -> BarcodeProfile:
    data = {"id": "test-serial", "kind": "barcode", "vendor": "Test", "model": "Serial", **overrides}
    parsed = parse_profile(data)
    assert isinstance(parsed, BarcodeProfile)
    return parsed


class Rig:
    """A simulated scanner on a pty, the driver on its slave end, and the readings so far."""

    def __init__(self, scanner: SimulatedSerialScanner, driver: SerialBarcodeDriver) -> None:
        self.scanner = scanner
        self.driver = driver
        self.readings: list[Reading] = []
        self.error: BaseException | None = None
        self.clock = FakeClock(start=T0)

    async def until(self, count: int) -> list[Reading]:
        async def enough() -> bool:
            return len(self.readings) >= count or self.error is not None

        await eventually(enough, what=f"{count} readings")
        return self.readings

    async def consume(self) -> None:
        try:
            async for reading in self.driver.readings():
                self.readings.append(reading)
        except DeviceUnavailableError as err:
            self.error = err


@asynccontextmanager
async def rig(
    *, terminator: str = "cr", settings: BarcodeSettings | None = None, **profile_overrides: Any
) -> AsyncIterator[Rig]:
    async with PtyPort() as port:
        scanner = SimulatedSerialScanner(port=port, terminator=terminator)  # type: ignore[arg-type]
        clock = FakeClock(start=T0)
        driver = SerialBarcodeDriver(
            profile=profile(terminator=terminator, **profile_overrides),
            binding=DeviceBinding(device_id="till-2-scanner", address=port.port),
            settings=settings or BarcodeSettings(),
            clock=clock,
        )
        the_rig = Rig(scanner, driver)
        the_rig.clock = clock
        run = asyncio.create_task(scanner.run())
        async with driver:
            consume = asyncio.create_task(the_rig.consume())
            try:
                yield the_rig
            finally:
                consume.cancel()
                run.cancel()
                await asyncio.gather(consume, run, return_exceptions=True)


async def test_a_scan_becomes_a_scan_sale_reading_with_the_wire_payload() -> None:
    async with rig(terminator="crlf") as r:
        r.scanner.queue_scan("5901234123457", aim="]E0")
        r.scanner.queue_scan("0109501101020917" + "17250600" + "10ABC" + GS + "3103001250", aim="]C1")
        first, second = await r.until(2)
    assert first.kind == "scan.sale"
    assert first.device_id == "till-2-scanner"
    assert first.ts == T0
    assert first.payload == {
        "code": "5901234123457",
        "symbology": "ean13",
        "symbology_guessed": False,
        "mode": "checkout",
        "gtin": "05901234123457",
        "quantity": 1,
        "ai": {},
        "gs1_incomplete": False,
    }
    assert second.payload["expiry"] == "2025-06-30"
    assert second.payload["net_weight_g"] == 1250.0
    for reading in (first, second):
        PAYLOAD_MODELS[reading.kind].model_validate(reading.payload)
    assert r.driver.health().readings_total == 2
    assert r.driver.health().last_reading_at == T0


async def test_databar_is_read_and_incomplete_gs1_data_is_flagged_counted_and_logged() -> None:
    async with rig() as r:
        r.scanner.queue_scan("0190012345678908320200175015100312", aim="]e0")  # zxing-cpp rssexpanded-1/20
        # The label: (423) holds 13 digits, which its format cannot take.
        r.scanner.queue_scan(
            "1599123131030017501012A" + GS + "422123" + GS + "21123456" + GS + "4230123456789012", aim="]C1"
        )
        with capture_logs() as logs:
            databar, incomplete = await r.until(2)
    assert (databar.payload["symbology"], databar.payload["gtin"]) == ("gs1_databar", "90012345678908")
    assert incomplete.payload["gs1_incomplete"] is True
    assert Scan.model_validate(incomplete.payload).ai == {
        "15": "991231",
        "3103": "001750",
        "10": "12A",
        "422": "123",
        "21": "123456",
    }
    assert r.driver.gs1_incomplete_total == 1
    assert r.driver.rejected_total == 0
    [warning] = [entry for entry in logs if entry["event"] == "barcode GS1 data incomplete"]
    assert warning["device_id"] == "till-2-scanner"
    assert "(423)" in warning["problem"]


async def test_double_reads_are_suppressed_and_a_rescan_after_the_window_counts() -> None:
    async with rig() as r:
        r.scanner.queue_scan("5901234123457", aim="]E0")
        r.scanner.queue_scan("5901234123457", aim="]E0")  # same instant: the scanner read it twice
        r.scanner.queue_scan("48512343", aim="]E4")
        await r.until(2)
        r.clock.advance(5.0)
        r.scanner.queue_scan("48512343", aim="]E4")  # picked up again, on purpose, seconds later
        readings = await r.until(3)
    assert [x.payload["code"] for x in readings] == ["5901234123457", "48512343", "48512343"]
    assert r.driver.suppressed_total == 1


async def test_bad_codes_are_counted_while_good_ones_flow() -> None:
    async with rig() as r:
        r.scanner.queue_garbage()
        r.scanner.queue_broken_check_digit("5901234123457", aim="]E0")
        r.scanner.queue_scan("http://example.com", aim="]Q1")
        r.scanner.queue_scan("5901234123457")  # no AIM id from a scanner programmed to send them
        r.scanner.queue_garbage(b"\xff" * 600)  # over the line limit
        r.scanner.queue_scan("Code 128", aim="]C0")
        readings = await r.until(1)
        assert readings[0].payload["symbology"] == "code128"
    assert dict(r.driver.rejected_by_reason) == {
        "missing_identifier": 2,  # the garbage and the scan without an id
        "bad_check_digit": 1,
        "unsupported_symbology": 1,
        "too_long": 1,
    }
    assert r.driver.rejected_total == 5
    assert "rejected 5 code(s)" in (r.driver.health().last_error or "")


async def test_unplugging_mid_code_discards_it_and_ends_with_device_unavailable() -> None:
    async with rig() as r:
        r.scanner.queue_scan("5901234123457", aim="]E0")
        partial = r.scanner.queue_partial("48512343", aim="]E4")
        sent = len(r.scanner.frame("5901234123457", aim="]E0")) + len(partial)
        await eventually(lambda: _true(r.driver.bytes_read == sent), what="the partial code to reach the driver")
        r.scanner.unplug()

        async def failed() -> bool:
            return r.error is not None

        await eventually(failed, what="the driver to see the unplug")
        assert r.driver.health().state is DriverState.DOWN
    assert [x.payload["code"] for x in r.readings] == ["5901234123457"]
    assert r.driver.partial_discarded_total == 1
    assert r.driver.rejected_by_reason["partial"] == 1
    assert r.driver.health().state is DriverState.CLOSED


async def test_the_simulated_cut_off_unplugs_after_its_delay() -> None:
    delays: list[float] = []

    async def record(seconds: float) -> None:
        delays.append(seconds)

    async with PtyPort() as port:
        scanner = SimulatedSerialScanner(port=port, sleep=record, unplug_delay_s=0.3)
        scanner.queue_cut_off("48512343", aim="]E4", keep=5)
        await asyncio.wait_for(scanner.run(), timeout=5)  # run() ends when the cable is pulled
        assert not port.plugged
    assert delays == [0.3]
    assert scanner.sent_total == 1


async def test_opening_a_missing_port_is_device_unavailable() -> None:
    driver = create(
        profile=profile(),
        binding=DeviceBinding(device_id="x", address="/dev/ttyACM-missing"),
        settings=BarcodeSettings(),
    )
    with pytest.raises(DeviceUnavailableError):
        await driver.__aenter__()
    await driver.__aexit__(None, None, None)
    assert driver.health().state is DriverState.CLOSED


async def test_a_scanner_without_aim_ids_and_lf_suffix_is_read_by_content() -> None:
    async with PtyPort() as port:
        scanner = SimulatedSerialScanner(port=port, terminator="lf", aim_ids=False)
        driver = create(
            profile=profile(terminator="lf", aim_ids=False),
            binding=DeviceBinding(device_id="s", address=port.port),
            settings=BarcodeSettings(mode="stock_count"),
        )
        readings: list[Reading] = []
        run = asyncio.create_task(scanner.run())
        async with driver:

            async def consume() -> None:
                async for reading in driver.readings():
                    readings.append(reading)

            task = asyncio.create_task(consume())
            scanner.queue_scan("0036602301467", aim="]E0")  # the aim is not sent by this scanner
            scanner.queue_scan("ABC-123", aim="]C0")

            async def two() -> bool:
                return len(readings) == 2

            await eventually(two, what="two scans")
            task.cancel()
            run.cancel()
            await asyncio.gather(task, run, return_exceptions=True)
    assert [(x.kind, x.payload["symbology"]) for x in readings] == [("scan.count", "upca"), ("scan.count", "code128")]


# A sample of the real decoded barcodes, sent through the pty as the scanner would send them.
SAMPLE_IDS = {
    "ean13-1:#526",
    "ean8-1:1",
    "upca-1:2",
    "upce-1:1",
    "code128-1:2",
    "code128-1:5",
    "code128-1:6",
    "itf-1:1",
    "qrcode-1:13",
}


async def test_real_samples_through_the_serial_driver() -> None:
    rows = [param.values[0] for param in zxing_rows()]
    chosen = [row for row in rows if row is None or f"{row['set']}:{row['sample']}" in SAMPLE_IDS]
    texts = [scanner_text(row) for row in chosen]
    assert len(texts) == len(SAMPLE_IDS)
    accepted = [(text, expected) for text, _, expected in texts if expected is not None]
    async with rig(terminator="crlf") as r:
        for text, aim, _ in texts:
            r.scanner.queue_scan(text[3:], aim=aim)
        readings = await r.until(len(accepted))
        await eventually(lambda: _true(r.driver.rejected_total == len(texts) - len(accepted)), what="rejects")
    assert [(x.payload["code"], x.payload["symbology"]) for x in readings] == [
        (text[3:], expected) for text, expected in accepted
    ]
    assert "óóóó1234óóabózz" in [x.payload["code"] for x in readings]  # Latin-1 through FNC4
    assert dict(r.driver.rejected_by_reason) == {"unsupported_symbology": 2}


async def _true(value: bool) -> bool:
    return value


def test_shipped_profiles_load_and_name_real_usb_ids() -> None:
    catalog = load_catalog()
    cdc = catalog.get("zebra-ds-cdc")
    assert isinstance(cdc, BarcodeProfile)
    assert cdc.interface == "serial"
    assert cdc.aim_ids
    assert (cdc.usb[0].vendor_id, cdc.usb[0].product_id) == ("05e0", "1701")
    gryphon = catalog.get("datalogic-gryphon-usbcom")
    assert isinstance(gryphon, BarcodeProfile)
    assert gryphon.interface == "serial"
    hid = catalog.get("zebra-ds-hid-kbd")
    assert isinstance(hid, BarcodeProfile)
    assert hid.interface == "hid"
    with pytest.raises(Exception, match="unknown key"):
        parse_profile({"id": "x", "kind": "barcode", "vendor": "v", "model": "m", "gs_key": "KEY_NOPE"})


def test_the_basket_replayer_scans_real_invoices_as_code_128() -> None:
    replayer = BasketReplayer(path=retail_path(), max_units_per_line=2, repeat=False)
    baskets = list(replayer.baskets())
    first = baskets[0]
    assert first.invoice == "536365"
    assert first.lines[0].stock_code == "85123A"
    assert first.lines[0].quantity == 6
    codes = {line.stock_code for basket in baskets for line in basket.lines}
    assert not codes & {"POST", "DOT", "M", "D", "BANK CHARGES"}
    assert not any(basket.invoice.startswith("C") for basket in baskets)
    scans = list(replayer.scans())
    assert scans[0].aim == "]C0"
    assert scans[0].code == "85123A"
    # A repeated item is spaced beyond the double-read window, so both units count.
    assert scans[1].code == "85123A"
    assert scans[1].delay_s > BarcodeSettings().double_read_window_s
    assert len(scans) == sum(min(line.quantity, 2) for basket in baskets for line in basket.lines)


async def test_the_simulator_replays_baskets_into_the_driver() -> None:
    slept: list[float] = []

    async def no_wait(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    async with PtyPort() as port:
        scanner = SimulatedSerialScanner(
            port=port, source=BasketReplayer(max_units_per_line=1, repeat=False).scans(), sleep=no_wait
        )
        driver = create(
            profile=profile(),
            binding=DeviceBinding(device_id="s", address=port.port),
            settings=BarcodeSettings(double_read_window_s=0),
        )
        readings: list[Reading] = []
        async with driver:

            async def consume() -> None:
                async for reading in driver.readings():
                    readings.append(reading)

            task = asyncio.create_task(consume())
            run = asyncio.create_task(scanner.run())
            await eventually(lambda: _true(len(readings) >= 20), what="20 basket scans")
            run.cancel()
            task.cancel()
            await asyncio.gather(task, run, return_exceptions=True)
    assert readings[0].payload["code"] == "85123A"
    assert readings[0].payload["symbology"] == "code128"
    assert driver.health().last_error is None
    assert slept[0] == BasketReplayer(repeat=False).basket_gap_s
