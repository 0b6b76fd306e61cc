"""The Modbus sensor driver end to end: create() -> driver -> pymodbus client -> null modem -> pymodbus server.

The simulated sensor is a pymodbus server on one end of a pair of real ptys; every byte
that crosses is recorded, so the driver's requests and the simulator's responses are
compared byte for byte with frames recorded from a real XY-MD02 / SHT20 sensor.
"""

from __future__ import annotations

import asyncio
import csv
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusSerialClient

from device_drivers.base import (
    CommandNotSupportedError,
    DeviceUnavailableError,
    DriverError,
    DriverState,
    Reading,
)
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.modbus_sensor.driver import ModbusSensorDriver, create
from device_drivers.modbus_sensor.profile import ModbusSensorProfile
from device_drivers.modbus_sensor.protocol import plan_reads
from device_drivers.modbus_sensor.simulator import Fault, ModbusSensorSimulator
from device_drivers.ports import DeviceBinding
from device_drivers.profiles import load_catalog, parse_settings
from device_drivers.simulated.climate import climate_series, recorded_climate, shared_data_dir
from device_drivers.simulated.pty import NullModem
from storegate.wire import PAYLOAD_MODELS, Command
from tests.conftest import eventually
from tests.device_drivers.collect import collecting

FAST_TIMEOUT_S = 0.4  # response timeout in tests: a pty answers in well under a millisecond, even on a busy machine


def _frames_csv() -> Path:
    folder = shared_data_dir()
    path = None if folder is None else folder / "modbus" / "xymd02_frames_verified.csv"
    if path is None or not path.is_file():
        pytest.fail("real Modbus frames missing: expected shared/data/modbus/xymd02_frames_verified.csv (SOURCES.md)")
    return path


def recorded_frames() -> set[bytes]:
    """Every frame in the recording of the real sensor."""
    with _frames_csv().open(newline="", encoding="utf-8") as handle:
        return {bytes.fromhex(row["hex"]) for row in csv.DictReader(handle)}


def xy_md02(**changes: Any) -> ModbusSensorProfile:
    """The shipped XY-MD02 profile with a short timeout and ``changes`` applied (validated)."""
    data = load_catalog().get("xy-md02").model_dump(mode="json")
    data["modbus"]["timeout_s"] = FAST_TIMEOUT_S
    data.update(changes)
    return ModbusSensorProfile.model_validate(data)


def settings(**changes: Any) -> EnvironmentSettings:
    """Environment settings with a fast poll."""
    return EnvironmentSettings.model_validate({"zone": "chiller-1", "poll_interval_s": 0.02, **changes})


def driver_for(profile: ModbusSensorProfile, address: str, **setting_changes: Any) -> ModbusSensorDriver:
    return create(profile=profile, binding=DeviceBinding("th-1", address), settings=settings(**setting_changes))


async def take(driver: ModbusSensorDriver, count: int) -> list[Reading]:
    readings = driver.readings()
    taken = [await asyncio.wait_for(anext(readings), 15) for _ in range(count)]
    await readings.aclose()  # type: ignore[attr-defined]
    return taken


# --------------------------------------------------------------------------- the profile


def test_shipped_profile_loads_and_reads_both_registers_in_one_request() -> None:
    profile = load_catalog().get("xy-md02")
    assert isinstance(profile, ModbusSensorProfile)
    assert (profile.serial.baudrate, profile.modbus.unit) == (9600, 1)
    blocks = plan_reads(profile.registers)
    assert [(b.function_code, b.address, b.count) for b in blocks] == [(4, 0x0001, 2)]
    assert isinstance(parse_settings(profile, {"zone": "freezer-2"}), EnvironmentSettings)


# --------------------------------------------------------------------------- byte for byte

# (request, response, scale, expected values): every read in the real sensor's recording.
RECORDED_READS = [
    ("01 04 00 01 00 02 20 0B", "01 04 04 01 31 02 22 2A CE", 0.1, {"temperature": 30.5, "humidity": 54.6}),
    ("01 04 00 01 00 01 60 0A", "01 04 02 01 31 79 74", 0.1, {"temperature": 30.5}),
    ("01 04 00 01 00 01 60 0A", "01 04 02 0B EA 3F 8F", 0.01, {"temperature": 30.5}),
    ("01 04 00 02 00 01 90 0A", "01 04 02 02 22 38 49", 0.1, {"humidity": 54.6}),
    ("01 04 00 02 00 01 90 0A", "01 04 02 15 54 B6 5F", 0.01, {"humidity": 54.6}),
]


@pytest.mark.parametrize(("request_hex", "response_hex", "scale", "expected"), RECORDED_READS)
async def test_driver_and_simulator_reproduce_the_recorded_frames_byte_for_byte(
    request_hex: str, response_hex: str, scale: float, expected: dict[str, float]
) -> None:
    request, response = bytes.fromhex(request_hex), bytes.fromhex(response_hex)
    assert {request, response} <= recorded_frames(), "the case must be a frame of the real sensor's recording"
    shipped = load_catalog().get("xy-md02")
    assert isinstance(shipped, ModbusSensorProfile)
    fields = [
        f.model_dump(mode="json") | {"scale": scale, "min": None, "max": None}
        for f in shipped.registers
        if f.quantity.value in expected
    ]
    profile = xy_md02(registers=fields)
    async with NullModem(record=True) as modem, ModbusSensorSimulator(profile=profile, modem=modem) as sim:
        sim.stuck = True
        sim.set_registers("input", int.from_bytes(request[2:4], "big"), _words(response))
        async with driver_for(profile, modem.port) as driver:
            readings = await take(driver, len(expected))
    assert bytes(modem.to_device) == request
    assert bytes(modem.from_device) == response
    assert {r.payload["quantity"]: r.payload["value"] for r in readings} == expected


def _words(response: bytes) -> list[int]:
    data = response[3:-2]
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


async def test_simulator_answers_settings_register_requests_as_the_real_sensor() -> None:
    read, read_answer = bytes.fromhex("01 03 01 01 00 01 D4 36"), bytes.fromhex("01 03 02 00 01 79 84")
    write = bytes.fromhex("01 06 01 01 00 08 D8 30")  # the real sensor echoes a single-register write
    assert {read, read_answer, write} <= recorded_frames()
    async with NullModem(record=True) as modem, ModbusSensorSimulator(profile=xy_md02(), modem=modem) as sim:
        client = AsyncModbusSerialClient(modem.port, baudrate=9600, timeout=1, retries=0, reconnect_delay=0)
        assert await client.connect()
        try:
            answer = await client.read_holding_registers(0x0101, count=1, device_id=1)
            assert (bytes(modem.to_device), bytes(modem.from_device)) == (read, read_answer)
            assert answer.registers == [1]
            del modem.to_device[:], modem.from_device[:]
            await client.write_register(0x0101, 8, device_id=1)
            assert (bytes(modem.to_device), bytes(modem.from_device)) == (write, write)
        finally:
            client.close()
        assert sim.registers("holding", 0x0101, 1) == [8]


# --------------------------------------------------------------------------- readings


async def test_readings_follow_the_real_climate_series_with_units_and_zone() -> None:
    assert recorded_climate(), "the real climate series is missing: shared/data/sensors/datatraining.txt (SOURCES.md)"
    offset = -40.0  # a freezer: negative temperatures cross the wire in two's complement
    async with (
        ModbusSensorSimulator(profile=xy_md02(), offset_c=offset, seed=3) as sim,
        driver_for(xy_md02(), sim.port, zone="freezer-1") as driver,
    ):
        readings = await take(driver, 6)
    series = climate_series(offset_c=offset, seed=3)
    next(series)  # the sample the simulator starts from; each read takes the next one
    expected = [next(series) for _ in range(3)]
    temperatures = [r.payload["value"] for r in readings if r.payload["quantity"] == "temperature"]
    humidities = [r.payload["value"] for r in readings if r.payload["quantity"] == "humidity"]
    assert temperatures == pytest.approx([s.temperature_c for s in expected], abs=0.051)
    assert humidities == pytest.approx([s.humidity_pct for s in expected], abs=0.051)
    assert all(isinstance(t, float) and t < 0 for t in temperatures)
    for reading in readings:
        assert (reading.device_id, reading.kind) == ("th-1", "environment.reading")
        assert reading.ts.tzinfo is not None
        assert reading.ts.utcoffset() == datetime.now(UTC).utcoffset()
        PAYLOAD_MODELS[reading.kind].model_validate(reading.payload)
        assert reading.payload["zone"] == "freezer-1"
        assert reading.payload["unit"] == {"temperature": "Cel", "humidity": "%RH"}[str(reading.payload["quantity"])]
    assert driver.health().readings_total == 6


async def test_unit_id_in_the_address_overrides_the_profile() -> None:
    async with ModbusSensorSimulator(profile=xy_md02(), unit=7) as sim:
        async with driver_for(xy_md02(), f"{sim.port}#unit=7") as driver:
            assert driver.unit == 7
            assert len(await take(driver, 2)) == 2
        # The profile's unit 1 is not on this bus: no answer, counted, and the driver stays up.
        async with driver_for(xy_md02(), sim.port) as driver, collecting(driver) as collector:
            await eventually(lambda: _true(driver.timeouts_total >= 2), what="timeouts counted")
            assert collector.readings == []
            assert collector.error is None
            assert driver.health().state is DriverState.UP


async def _true(value: bool) -> bool:
    return value


def test_a_bad_unit_in_the_address_is_a_driver_error() -> None:
    with pytest.raises(DriverError, match=r"outside 1\.\.247"):
        driver_for(xy_md02(), "/dev/ttyUSB0#unit=300")


# --------------------------------------------------------------------------- faults


async def test_malformed_responses_are_counted_and_skipped_while_good_readings_flow() -> None:
    async with (
        ModbusSensorSimulator(profile=xy_md02()) as sim,
        driver_for(xy_md02(), sim.port) as driver,
        collecting(driver) as collector,
    ):
        await eventually(lambda: _true(len(collector.readings) >= 2), what="first readings")
        for fault in Fault:
            sim.inject(fault)
        await eventually(lambda: _true(driver.rejected_total >= len(Fault)), what="every fault rejected")
        good = len(collector.readings)
        await eventually(lambda: _true(len(collector.readings) >= good + 4), what="readings after the faults")
        assert collector.error is None
    assert driver.rejected_total == len(Fault)
    assert driver.timeouts_total == 0  # garbage and CRC errors are rejects, not silence
    last_error = driver.health().last_error or ""
    assert f"rejected {len(Fault)} responses" in last_error
    assert driver.health().state is DriverState.CLOSED


async def test_a_value_outside_the_sensor_range_is_refused_alone() -> None:
    async with ModbusSensorSimulator(profile=xy_md02()) as sim, driver_for(xy_md02(), sim.port) as driver:
        sim.stuck = True
        sim.set_registers("input", 0x0001, [0x7FFF, 0x0222])  # 3276.7 Cel: the probe is broken
        readings = await take(driver, 2)
    assert [(r.payload["quantity"], r.payload["value"]) for r in readings] == [("humidity", 54.6)] * 2
    assert driver.rejected_total == 2
    assert "outside" in (driver.health().last_error or "")


async def test_a_stuck_sensor_keeps_reporting_the_same_values() -> None:
    async with ModbusSensorSimulator(profile=xy_md02(), seed=5) as sim, driver_for(xy_md02(), sim.port) as driver:
        sim.stuck = True
        readings = await take(driver, 6)
    assert len({(r.payload["quantity"], r.payload["value"]) for r in readings}) == 2


async def test_a_silent_sensor_keeps_the_driver_polling_and_counts_timeouts() -> None:
    async with (
        ModbusSensorSimulator(profile=xy_md02()) as sim,
        driver_for(xy_md02(), sim.port) as driver,
        collecting(driver) as collector,
    ):
        await eventually(lambda: _true(len(collector.readings) >= 2), what="first readings")
        sim.silent = True
        await eventually(lambda: _true(driver.timeouts_total >= 3), what="timeouts while silent")
        assert driver.health().state is DriverState.UP
        assert collector.error is None
        assert "no answer" in (driver.health().last_error or "")
        before = len(collector.readings)
        sim.silent = False
        await eventually(lambda: _true(len(collector.readings) >= before + 2), what="readings after silence")
    assert driver.rejected_total == 0


async def test_unplugging_ends_readings_with_device_unavailable() -> None:
    async with ModbusSensorSimulator(profile=xy_md02()) as sim:
        port = sim.port
        async with driver_for(xy_md02(), port) as driver, collecting(driver) as collector:
            await eventually(lambda: _true(len(collector.readings) >= 2), what="first readings")
            sim.unplug()
            await asyncio.wait_for(collector.task, 15)
            assert isinstance(collector.error, DeviceUnavailableError)
            assert driver.health().state is DriverState.DOWN
        with pytest.raises(DeviceUnavailableError):
            async with driver_for(xy_md02(), port):
                pass


async def test_opening_a_missing_port_is_device_unavailable() -> None:
    driver = driver_for(xy_md02(), "/dev/does-not-exist-ttyUSB9")
    with pytest.raises(DeviceUnavailableError):
        await driver.__aenter__()
    await driver.__aexit__(None, None, None)
    assert driver.health().state is DriverState.CLOSED


# --------------------------------------------------------------------------- commands


def _command(name: str) -> Command:
    return Command(
        command_id=uuid.uuid4(), store_id="store-1", gateway_id="gw-1", name=name, issued_at=datetime.now(UTC)
    )


async def test_ping_reads_the_sensor_and_unknown_commands_are_refused() -> None:
    async with ModbusSensorSimulator(profile=xy_md02()) as sim, driver_for(xy_md02(), sim.port) as driver:
        assert (await driver.execute(_command("ping"))).status == "done"
        sim.silent = True
        failed = await driver.execute(_command("ping"))
        assert failed.status == "failed"
        assert "no answer" in failed.detail
        with pytest.raises(CommandNotSupportedError):
            await driver.execute(_command("tare"))
