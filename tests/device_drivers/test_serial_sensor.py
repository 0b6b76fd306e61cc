"""The line sensor driver end to end: create() -> driver -> real pty -> simulated sensor printing lines."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from device_drivers.base import (
    CommandNotSupportedError,
    DeviceUnavailableError,
    DriverState,
)
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.ports import DeviceBinding
from device_drivers.profiles import load_catalog, parse_profile
from device_drivers.serial_sensor.driver import SerialSensorDriver, create
from device_drivers.serial_sensor.profile import SerialSensorProfile
from device_drivers.serial_sensor.protocol import parse_line
from device_drivers.serial_sensor.simulator import Fault, SerialSensorSimulator
from device_drivers.simulated.climate import climate_series, recorded_climate
from storegate.wire import PAYLOAD_MODELS, Command
from tests.conftest import eventually
from tests.device_drivers.collect import collecting

UNITS = {"temperature": "Cel", "humidity": "%RH"}


def diy_th(**line_changes: Any) -> SerialSensorProfile:
    """The shipped line sensor profile with ``line_changes`` applied (validated)."""
    data = load_catalog().get("diy-th-serial").model_dump(mode="json")
    data["line"].update(line_changes)
    return SerialSensorProfile.model_validate(data)


def driver_for(profile: SerialSensorProfile, port: str, **setting_changes: Any) -> SerialSensorDriver:
    settings = EnvironmentSettings.model_validate({"zone": "back-room", "poll_interval_s": 0.001, **setting_changes})
    return create(profile=profile, binding=DeviceBinding("th-line-1", port), settings=settings)


async def _true(value: bool) -> bool:
    return value


async def until(condition: Any, what: str) -> None:
    await eventually(lambda: _true(bool(condition())), timeout=15, what=what)


async def send(sim: SerialSensorSimulator, driver: SerialSensorDriver, line: bytes | None = None) -> None:
    """Print the simulator's next line (or ``line``) and wait until the driver has read it.

    One line at a time: lines arriving together within one poll interval are reported once.
    """
    before = driver.lines_total
    if line is None:
        sim.emit()
    else:
        sim.pty.write(line + b"\r\n")
    await until(lambda: driver.lines_total > before, "the line read")


# --------------------------------------------------------------------------- the profile


def test_shipped_profile_loads_and_parses_its_documented_line() -> None:
    profile = load_catalog().get("diy-th-serial")
    assert isinstance(profile, SerialSensorProfile)
    result = parse_line(b"T=21.43;H=38.10*29", profile.line)
    assert [(m.quantity.value, m.value) for m in result.measurements] == [("temperature", 21.43), ("humidity", 38.1)]


def test_a_line_format_missing_a_group_is_refused() -> None:
    data = load_catalog().get("diy-th-serial").model_dump(mode="json")
    data["line"]["fields"].append({"quantity": "co2"})
    with pytest.raises(ValueError, match="no group named 'co2'"):
        SerialSensorProfile.model_validate(data)


# --------------------------------------------------------------------------- readings


async def test_lines_become_readings_with_values_units_and_zone() -> None:
    assert recorded_climate(), "the real climate series is missing: shared/data/sensors/datatraining.txt (SOURCES.md)"
    async with (
        SerialSensorSimulator(offset_c=-18.0, seed=4) as sim,
        driver_for(diy_th(), sim.port) as driver,
        collecting(driver) as collector,
    ):
        sent = []
        for _ in range(3):
            await send(sim, driver)
            sent.append(sim.sample)
        await until(lambda: len(collector.readings) == 6, "readings of the three lines")
    series = climate_series(offset_c=-18.0, seed=4)
    next(series)  # the sample the simulator starts from; each line takes the next one
    assert sent == [next(series) for _ in range(3)]
    expected = [(q, v) for s in sent for q, v in (("temperature", s.temperature_c), ("humidity", s.humidity_pct))]
    assert collector.pairs() == [(q, pytest.approx(v, abs=0.005)) for q, v in expected]
    for reading in collector.readings:
        assert (reading.device_id, reading.kind, reading.payload["zone"]) == (
            "th-line-1",
            "environment.reading",
            "back-room",
        )
        assert reading.payload["unit"] == UNITS[str(reading.payload["quantity"])]
        assert reading.ts.tzinfo is not None
        PAYLOAD_MODELS[reading.kind].model_validate(reading.payload)
    assert driver.health().readings_total == 6
    assert driver.rejected_total == 0


async def test_another_line_sensor_is_a_data_file() -> None:
    # An NMEA 0183 transducer sentence ($..XDR): '$' before the checksummed part, other group names.
    profile = parse_profile(
        {
            "id": "nmea-xdr-th",
            "kind": "serial-sensor",
            "vendor": "test",
            "model": "XDR",
            "serial": {"baudrate": 4800},
            "line": {
                "pattern": r"WIXDR,C,(?P<t>-?\d+\.\d),C,TEMP,H,(?P<h>\d+\.\d),P,HUM",
                "checksum": "nmea-xor",
                "fields": [{"quantity": "temperature", "group": "t"}, {"quantity": "humidity", "group": "h"}],
                "silence_s": 5,
            },
        }
    )
    assert isinstance(profile, SerialSensorProfile)
    template = "WIXDR,C,{temperature:.1f},C,TEMP,H,{humidity:.1f},P,HUM"
    async with (
        SerialSensorSimulator(template=template, seed=9) as sim,
        driver_for(profile, sim.port) as driver,
        collecting(driver) as collector,
    ):
        sim.pty.write(b"$" + sim.line(sim.sample) + b"\r\n")  # NMEA puts '$' before the checksummed part
        await until(lambda: len(collector.readings) >= 2, "readings of the XDR sentence")
    assert collector.pairs() == [
        ("temperature", pytest.approx(sim.sample.temperature_c, abs=0.051)),
        ("humidity", pytest.approx(sim.sample.humidity_pct, abs=0.051)),
    ]


async def test_lines_are_reported_at_most_once_per_poll_interval() -> None:
    async with (
        SerialSensorSimulator() as sim,
        driver_for(diy_th(), sim.port, poll_interval_s=3600) as driver,
        collecting(driver) as collector,
    ):
        for _ in range(4):
            sim.emit()
        await until(lambda: driver.lines_total == 4, "all four lines read")
    assert len(collector.readings) == 2  # the first line's two quantities; the rest were read and checked
    assert driver.rejected_total == 0


# --------------------------------------------------------------------------- faults


async def test_bad_lines_are_counted_and_skipped_while_good_readings_flow() -> None:
    async with (
        SerialSensorSimulator(seed=2) as sim,
        driver_for(diy_th(), sim.port) as driver,
        collecting(driver) as collector,
    ):
        await send(sim, driver)
        for fault in Fault:
            sim.inject(fault)
            await send(sim, driver)
        await send(sim, driver, b"x" * 500)  # far over the profile's max_length: noise
        await send(sim, driver)
        await until(lambda: len(collector.readings) == 5, "the readings of the good lines")
        assert collector.error is None
    assert driver.rejected_total == len(Fault) + 1
    # The out-of-range line lost only its temperature: its humidity was still reported.
    assert [q for q, _ in collector.pairs()] == ["temperature", "humidity", "humidity", "temperature", "humidity"]
    assert f"rejected {len(Fault) + 1} lines" in (driver.health().last_error or "")


async def test_every_garbage_line_is_counted() -> None:
    rng = random.Random(11)
    alphabet = bytes(b for b in range(256) if b not in b"\r\n")
    garbage = [bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(150)]
    async with (
        SerialSensorSimulator(seed=6) as sim,
        driver_for(diy_th(), sim.port) as driver,
        collecting(driver) as collector,
    ):
        for junk in garbage:
            sim.pty.write(junk + b"\r\n")
        sim.emit()
        await until(lambda: len(collector.readings) == 2, "the good line after the garbage")
    assert driver.lines_total == len([g for g in garbage if g.strip(b"\r\n")]) + 1
    assert driver.rejected_total == driver.lines_total - 1


async def test_a_stuck_sensor_keeps_printing_the_same_values() -> None:
    async with SerialSensorSimulator(seed=8) as sim, driver_for(diy_th(), sim.port) as driver:
        sim.stuck = True
        async with collecting(driver) as collector:
            for _ in range(3):
                await send(sim, driver)
            await until(lambda: len(collector.readings) == 6, "three lines")
    assert len(set(collector.pairs())) == 2


async def test_a_silent_sensor_keeps_the_driver_reading_and_counts_timeouts() -> None:
    profile = diy_th(silence_s=0.05)
    async with SerialSensorSimulator(interval_s=0.01, seed=1) as sim, driver_for(profile, sim.port) as driver:
        runner = asyncio.create_task(sim.run())
        try:
            async with collecting(driver) as collector:
                await until(lambda: len(collector.readings) >= 4, "first readings")
                sim.silent = True
                await until(lambda: driver.timeouts_total >= 3, "timeouts while silent")
                assert driver.health().state is DriverState.UP
                assert collector.error is None
                assert "no line" in (driver.health().last_error or "")
                before = len(collector.readings)
                sim.silent = False
                await until(lambda: len(collector.readings) >= before + 4, "readings after the silence")
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)


async def test_random_faults_of_a_running_simulator_are_counted() -> None:
    async with (
        SerialSensorSimulator(interval_s=0.002, fault_rate=0.3, seed=12) as sim,
        driver_for(diy_th(), sim.port) as driver,
        collecting(driver) as collector,
    ):
        runner = asyncio.create_task(sim.run())
        try:
            await until(lambda: driver.lines_total >= 40, "forty lines")
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
    assert 0 < driver.rejected_total < driver.lines_total
    assert collector.readings
    assert collector.error is None
    assert driver.timeouts_total == 0


async def test_unplugging_ends_readings_with_device_unavailable() -> None:
    async with SerialSensorSimulator() as sim:
        port = sim.port
        async with driver_for(diy_th(), port) as driver, collecting(driver) as collector:
            sim.emit()
            await until(lambda: len(collector.readings) == 2, "a reading")
            sim.unplug()
            await asyncio.wait_for(collector.task, 15)
            assert isinstance(collector.error, DeviceUnavailableError)
            assert driver.health().state is DriverState.DOWN
        with pytest.raises(DeviceUnavailableError):
            async with driver_for(diy_th(), port):
                pass


# --------------------------------------------------------------------------- commands


def _command(name: str) -> Command:
    return Command(
        command_id=uuid.uuid4(), store_id="store-1", gateway_id="gw-1", name=name, issued_at=datetime.now(UTC)
    )


async def test_ping_says_whether_the_sensor_printed_recently() -> None:
    async with SerialSensorSimulator() as sim, driver_for(diy_th(), sim.port) as driver:
        assert (await driver.execute(_command("ping"))).status == "failed"  # nothing heard yet
        async with collecting(driver) as collector:
            sim.emit()
            await until(lambda: len(collector.readings) == 2, "a reading")
        done = await driver.execute(_command("ping"))
        assert done.status == "done"
        assert done.detail.startswith("pong")
        with pytest.raises(CommandNotSupportedError):
            await driver.execute(_command("print"))
