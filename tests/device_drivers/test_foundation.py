"""The parts every driver family is built on: ports and stable keys, profile matching, serial I/O over ptys."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from device_drivers.base import DeviceUnavailableError
from device_drivers.ports import PortInfo
from device_drivers.profile_base import SerialLink, UsbMatch
from device_drivers.simulated.climate import climate_series, recorded_climate, shared_data_dir
from device_drivers.simulated.pty import NullModem, PtyPort
from device_drivers.toolkit.serialio import LineTooLongError, SerialTransport
from storegate.wire import DeviceIdentity
from tests.conftest import eventually


def port(address: str = "/dev/ttyACM0", **identity: str) -> PortInfo:
    return PortInfo(address=address, identity=DeviceIdentity(**identity))


@pytest.mark.parametrize(
    ("info", "key"),
    [
        (port(vendor_id="0c2e", product_id="0b61", serial_number="19118B4C51"), "usb-0c2e:0b61-19118B4C51"),
        # No serial number: the physical port it is plugged into, so a replug there is the same device.
        (port(vendor_id="1a86", product_id="7523", location="1-1.2:1.0"), "port-1-1.2:1.0"),
        (port("/dev/ttyS0"), "dev-ttyS0"),
        # Whatever a device claims, the key is a valid wire device id (no spaces, slashes, 128 chars at most).
        (port(vendor_id="0c2e", serial_number="A B/C" + "x" * 120), "usb-0c2e:0000-A_B_C" + "x" * 109),
    ],
)
def test_stable_key_prefers_serial_number_then_physical_port(info: PortInfo, key: str) -> None:
    assert info.stable_key == key


def test_the_same_scanner_on_another_port_keeps_its_key() -> None:
    a = port("/dev/ttyACM0", vendor_id="0c2e", product_id="0b61", serial_number="S1", location="1-1.1:1.0")
    b = port("/dev/ttyACM3", vendor_id="0c2e", product_id="0b61", serial_number="S1", location="1-1.4:1.0")
    assert a.stable_key == b.stable_key


def test_usb_match_needs_every_given_field() -> None:
    scanner = port(vendor_id="0c2e", product_id="0b61", product="Honeywell Scanning 1900", serial_number="19118B4C51")
    assert UsbMatch(vendor_id="0C2E").matches(scanner)  # hex in any case
    assert UsbMatch(vendor_id="0c2e", product_id="0b61", product="honeywell*").matches(scanner)
    assert not UsbMatch(vendor_id="0c2e", product_id="0b62").matches(scanner)
    assert not UsbMatch(vendor_id="0c2e", product="*zebra*").matches(scanner)
    assert UsbMatch(vendor_id="0c2e", serial_number=r"\d{5}B\w+").matches(scanner)
    assert not UsbMatch(vendor_id="0c2e", serial_number=r"B4C").matches(scanner)  # a full match, not a search
    assert UsbMatch(vendor_id="0c2e", product_id="0b61", product="*").specificity == 2


def test_usb_match_rejects_a_bad_pattern() -> None:
    with pytest.raises(ValueError, match="regular expression"):
        UsbMatch(vendor_id="0c2e", serial_number="(")


async def test_serial_lines_over_a_pty_and_unplug() -> None:
    async with PtyPort() as device, SerialTransport(url=device.port, link=SerialLink(baudrate=115200)) as serial:
        device.write(b"first\r\n\r\nsecond\rthird\n")
        assert [await serial.read_line(timeout=2) for _ in range(3)] == [b"first", b"second", b"third"]
        await serial.write(b"PING\r\n")
        assert await device.read_line(timeout=2) == b"PING\r"
        device.unplug()
        with pytest.raises(DeviceUnavailableError, match="went away"):
            await serial.read_line(timeout=2)
        with pytest.raises(DeviceUnavailableError):  # and every read after it
            await serial.read_line(timeout=2)


async def test_an_over_long_line_is_dropped_and_the_next_one_still_arrives() -> None:
    async with PtyPort() as device, SerialTransport(url=device.port, link=SerialLink(), max_line=64) as serial:
        device.write(b"x" * 500 + b"\nok\n")
        with pytest.raises(LineTooLongError):
            await serial.read_line(timeout=2)
        assert await serial.read_line(timeout=2) == b"ok"


async def test_a_missing_port_is_unavailable() -> None:
    with pytest.raises(DeviceUnavailableError, match="cannot open"):
        async with SerialTransport(url="/dev/ttyDOESNOTEXIST", link=SerialLink()):
            pass


async def test_no_line_within_the_timeout() -> None:
    async with PtyPort() as device, SerialTransport(url=device.port, link=SerialLink()) as serial:
        device.write(b"partial")
        with pytest.raises(TimeoutError):
            await serial.read_line(timeout=0.2)


async def test_null_modem_carries_and_records_both_directions() -> None:
    async with (
        NullModem(record=True) as cable,
        SerialTransport(url=cable.port, link=SerialLink()) as driver,
        SerialTransport(url=cable.device_port, link=SerialLink()) as device,
    ):
        await driver.write(b"\x01\x04\x00\x01\x00\x02\x20\x0b\n")
        assert await device.read_line(terminators=b"\n", timeout=2) == b"\x01\x04\x00\x01\x00\x02\x20\x0b"
        await device.write(b"answer\n")
        assert await driver.read_line(timeout=2) == b"answer"
        assert bytes(cable.to_device) == b"\x01\x04\x00\x01\x00\x02\x20\x0b\n"
        assert bytes(cable.from_device) == b"answer\n"
        cable.unplug()
        with pytest.raises(DeviceUnavailableError):
            await driver.read_line(timeout=2)


def test_the_real_climate_series_is_found_and_shifted() -> None:
    folder = shared_data_dir()
    assert folder is not None, "the shared real data (../shared/data) is missing; set STOREGATE_SHARED_DATA"
    recorded = recorded_climate()
    assert len(recorded) > 20_000  # three files of minute readings
    assert all(15 < s.temperature_c < 30 and 10 < s.humidity_pct < 60 for s in recorded)
    chiller = climate_series(offset_c=-17.0, seed=1)
    room = climate_series(seed=1)  # the same seed starts at the same minute
    for _ in range(100):
        cold, warm = next(chiller), next(room)
        assert cold.temperature_c == pytest.approx(warm.temperature_c - 17.0, abs=0.011)


def test_without_the_data_the_simulators_fall_back_to_a_curve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STOREGATE_SHARED_DATA", str(tmp_path / "nothing-here"))
    recorded_climate.cache_clear()
    try:
        samples = [next(climate_series(seed=3)) for _ in range(3)]
        assert all(18 < s.temperature_c < 24 for s in samples)
    finally:
        monkeypatch.undo()
        recorded_climate.cache_clear()


async def test_a_stalled_reader_pauses_reading_instead_of_growing() -> None:
    from device_drivers.toolkit import serialio

    async with PtyPort() as device, SerialTransport(url=device.port, link=SerialLink(), max_line=1 << 20) as serial:
        sent = 0
        # Far more than the transport may hold: the kernel's pty buffer takes the rest, then refuses.
        for _ in range(4000):
            device.write(b"x" * 256)
            sent += 256
            await asyncio.sleep(0)
        await eventually(lambda: _async(serial._paused), timeout=5, what="reading paused")
        assert serial._chunks.qsize() <= serialio._MAX_CHUNKS
        # Taking chunks resumes reading, and what the kernel kept arrives in order.
        received = 0
        while True:
            try:
                received += len(await serial.read_chunk(timeout=0.5))
            except TimeoutError:
                break
        assert not serial._paused
        assert 0 < received <= sent


async def _async(value: object) -> object:
    return value
