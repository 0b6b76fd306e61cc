"""DS18B20 through w1 sysfs: the w1_slave parser (tables, fuzzing), discovery, the driver on a fake sysfs tree."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_drivers.base import DeviceUnavailableError, DriverState, Reading
from device_drivers.environment.monitor import MonitoredDriver
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.onewire.discovery import discover
from device_drivers.onewire.driver import OneWireDriver
from device_drivers.onewire.profile import OneWireSensorProfile
from device_drivers.onewire.protocol import (
    W1RejectError,
    dallas_crc8,
    format_w1_slave,
    parse_w1_slave,
    rom_id,
    scratchpad_for,
)
from device_drivers.onewire.simulator import OneWireSimulator
from device_drivers.ports import DeviceBinding
from device_drivers.profiles import create_driver, load_catalog
from device_drivers.simulated.climate import climate_series, recorded_climate
from storegate.wire import EnvironmentReading
from tests.conftest import eventually

# A real read from a DS18B20 on a Raspberry Pi (23.125 Cel).
REAL = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"


def test_parses_a_real_read() -> None:
    sample = parse_w1_slave(REAL)
    assert sample.temperature_c == 23.125
    assert sample.scratchpad == bytes.fromhex("72014b467fff0e1057")


def test_dallas_crc_matches_real_data() -> None:
    assert dallas_crc8(bytes.fromhex("72014b467fff0e10")) == 0x57  # the scratchpad above
    # Maxim application note 27's worked example: family 02, serial 00000001B81C, CRC A2.
    assert rom_id("02-00000001b81c") == "021cb801000000a2"
    rom = bytes.fromhex(str(rom_id("28-0316a279b0ff")))
    assert dallas_crc8(rom) == 0  # a ROM including its own CRC checks to zero


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (REAL.replace("YES", "NO"), "crc"),
        (format_w1_slave(scratchpad_for(85.0)), "power_on_reset"),
        ("00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n", "no_data"),
        (REAL.replace("t=23125", "t=4092875"), "out_of_range"),  # old kernels' negative-value bug
        (REAL.replace("t=23125", "t=-56000"), "out_of_range"),
        (REAL.splitlines()[0], "malformed"),
        ("", "malformed"),
        (REAL.replace("t=", "t:"), "malformed"),
    ],
)
def test_rejects(text: str, reason: str) -> None:
    with pytest.raises(W1RejectError) as caught:
        parse_w1_slave(text)
    assert caught.value.reason == reason


def test_negative_temperatures() -> None:
    assert parse_w1_slave(format_w1_slave(scratchpad_for(-18.5))).temperature_c == -18.5
    text = format_w1_slave(scratchpad_for(-10.125))
    assert "t=-10125" in text
    assert parse_w1_slave(text).temperature_c == -10.125


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789abcdef :=-tcrYESNO\n\r\x00é"), max_size=120) | st.text(max_size=120))
def test_fuzz_random_text(text: str) -> None:
    reason: str
    try:
        sample = parse_w1_slave(text)
    except W1RejectError as err:
        reason = err.reason
    else:
        reason = "accepted"
        assert -55.0 <= sample.temperature_c <= 125.0
    assert reason in {"accepted", "malformed", "crc", "power_on_reset", "no_data", "out_of_range"}


@settings(max_examples=1500, deadline=None)
@given(
    st.integers(min_value=-55 * 16, max_value=125 * 16),
    st.lists(st.tuples(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=127)), max_size=3),
    st.sampled_from(["flip", "delete", "insert"]),
)
def test_fuzz_mutated_reads(raw: int, edits: list[tuple[int, int]], how: str) -> None:
    text = format_w1_slave(scratchpad_for(raw / 16))
    if not edits:
        if raw == 85 * 16:
            # 85 Cel is what a DS18B20 reads after a reset with no conversion: refused by design, even when real.
            with pytest.raises(W1RejectError, match="power_on_reset"):
                parse_w1_slave(text)
            return
        # Unmutated: the value survives the round trip at the probe's 1/16 Cel resolution.
        assert abs(parse_w1_slave(text).temperature_c - raw / 16) < 0.001
        return
    chars = list(text)
    for position, code in edits:
        i = position % len(chars)
        if how == "flip":
            chars[i] = chr(code)
        elif how == "delete" and len(chars) > 1:
            del chars[i]
        else:
            chars.insert(i, chr(code))
    try:
        sample = parse_w1_slave("".join(chars))
    except W1RejectError:
        return
    assert -55.0 <= sample.temperature_c <= 125.0


def test_discover_lists_probes_of_the_wanted_families(tmp_path: Path) -> None:
    for name in ("w1_bus_master1", "28-0316a279b0ff", "28-000005e2fdc3", "10-000802b4a6c1", "3a-00000000abcd"):
        (tmp_path / name).mkdir()
    (tmp_path / "28-notadevice").mkdir()
    ports = discover(tmp_path, ("28",))
    assert [Path(p.address).name for p in ports] == ["28-000005e2fdc3", "28-0316a279b0ff"]
    assert ports[1].identity.serial_number == rom_id("28-0316a279b0ff")
    assert ports[1].identity.product == "DS18B20"
    assert ports[0].stable_key != ports[1].stable_key
    assert {Path(p.address).name for p in discover(tmp_path, ("28", "10"))} >= {"10-000802b4a6c1"}
    assert discover(tmp_path / "absent") == []


PROFILE = OneWireSensorProfile(id="ds18b20", kind="w1-sensor", vendor="Maxim", model="DS18B20")


def _driver(directory: Path, **settings: object) -> OneWireDriver:
    return OneWireDriver(
        profile=PROFILE,
        binding=DeviceBinding(device_id="chiller-probe", address=str(directory)),
        settings=EnvironmentSettings(zone="chiller-1", poll_interval_s=0.005, **settings),
    )


async def _collect(driver: OneWireDriver, simulator: OneWireSimulator, name: str, count: int) -> list[Reading]:
    """``count`` readings, the simulator stepping after each one (so each is a new sample)."""
    out: list[Reading] = []
    stream = driver.readings()
    while len(out) < count:
        out.append(await asyncio.wait_for(anext(stream), 5))
        simulator.step()
    await stream.aclose()  # type: ignore[attr-defined]
    return out


async def test_driver_reads_the_real_climate_series(tmp_path: Path) -> None:
    assert recorded_climate(), "the shared climate data is missing: see /work/shared/data/SOURCES.md"
    simulator = OneWireSimulator(root=tmp_path)
    probe = simulator.add_probe(offset_c=-18.0, seed=3)
    expected = next(climate_series(offset_c=-18.0, seed=3)).temperature_c
    async with _driver(probe) as driver:
        first = await anext(driver.readings())
        assert first.kind == "environment.reading"
        payload = EnvironmentReading.model_validate(first.payload)
        assert payload.zone == "chiller-1"
        assert abs(payload.value - expected) <= 1 / 32  # the probe's 1/16 Cel resolution
        assert driver.health().state is DriverState.UP
        assert driver.health().readings_total == 1


async def test_bad_reads_are_counted_and_skipped(tmp_path: Path) -> None:
    simulator = OneWireSimulator(root=tmp_path)
    probe = simulator.add_probe()
    async with _driver(probe) as driver:
        assert await driver.read_once() is not None
        simulator.inject(probe.name, "crc", "power_on_reset", "no_data")
        for _ in range(3):
            simulator.step()
            assert await driver.read_once() is None  # skipped, not raised
        simulator.step()
        after = await driver.read_once()
        # The polling loop carries on through rejects too.
        simulator.inject(probe.name, "crc")
        simulator.step()
        stream = driver.readings()
        task = asyncio.ensure_future(anext(stream))
        await eventually(lambda: _async(driver.rejected_total >= 5), timeout=5, interval=0.01, what="a reject")
        simulator.step()
        polled = await asyncio.wait_for(task, 5)
        await stream.aclose()  # type: ignore[attr-defined]
    reasons = driver.rejects.by_reason
    assert (reasons["crc"] >= 2, reasons["power_on_reset"], reasons["no_data"]) == (True, 1, 1)
    assert after is not None
    assert polled.kind == "environment.reading"
    assert driver.health().readings_total == 3
    last_error = driver.health().last_error
    assert last_error is not None
    assert last_error.startswith("crc:")


async def _async(value: bool) -> bool:
    return value


async def test_a_vanished_probe_is_unavailable(tmp_path: Path) -> None:
    simulator = OneWireSimulator(root=tmp_path)
    probe = simulator.add_probe()
    async with _driver(probe) as driver:
        stream = driver.readings()
        await anext(stream)
        simulator.unplug(probe.name)
        with pytest.raises(DeviceUnavailableError, match="unplugged"):
            await asyncio.wait_for(anext(stream), 5)
        assert driver.health().state is DriverState.DOWN
    with pytest.raises(DeviceUnavailableError):
        async with _driver(probe):
            pass


async def test_the_shipped_profile_makes_a_monitored_driver(tmp_path: Path) -> None:
    profile = load_catalog().get("ds18b20")
    data = tomllib.loads((Path(__file__).parents[2] / "firmware_configs" / "ds18b20.toml").read_text())
    assert data["family_codes"] == ["28"]
    simulator = OneWireSimulator(root=tmp_path)
    probe = simulator.add_probe()
    driver = create_driver(profile, DeviceBinding(device_id="p1", address=str(probe)), EnvironmentSettings())
    assert isinstance(driver, MonitoredDriver)
    assert isinstance(driver.inner, OneWireDriver)
    async with driver:
        reading = await asyncio.wait_for(anext(driver.readings()), 5)
    assert reading.device_id == "p1"
