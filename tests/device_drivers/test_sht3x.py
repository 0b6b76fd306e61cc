"""SHT3x on I2C: CRC and frame parsing (datasheet vectors, fuzzing) and the driver against a simulated smbus2 bus."""

from __future__ import annotations

import asyncio
import errno

import pytest
import smbus2
from hypothesis import given, settings
from hypothesis import strategies as st

from device_drivers.base import DeviceUnavailableError, DriverError, DriverState
from device_drivers.environment.monitor import MonitoredDriver
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.ports import DeviceBinding
from device_drivers.profiles import create_driver, load_catalog
from device_drivers.sht3x.driver import ERRNO_REASONS, Sht3xDriver
from device_drivers.sht3x.profile import I2cSensorProfile
from device_drivers.sht3x.protocol import (
    HEATER_OFF,
    MEASURE_HIGH_REPEATABILITY,
    SOFT_RESET,
    FrameError,
    I2cAddress,
    Measurement,
    crc8,
    encode_measurement,
    parse_address,
    parse_measurement,
)
from device_drivers.sht3x.simulator import SimulatedSht3x
from device_drivers.simulated.climate import recorded_climate
from storegate.wire import PAYLOAD_MODELS
from tests.clocks import FakeClock


def test_crc_datasheet_vector() -> None:
    assert crc8(b"\xbe\xef") == 0x92


def test_conversion_formulas() -> None:
    # raw 0x6666 = 26214: T = -45 + 175 * 26214 / 65535 = 25.0, RH = 40.0
    frame = b"\x66\x66" + bytes([crc8(b"\x66\x66")]) + b"\x66\x66" + bytes([crc8(b"\x66\x66")])
    measurement = parse_measurement(frame)
    assert (measurement.temperature_c, measurement.humidity_pct) == (25.0, 40.0)
    assert parse_measurement(b"\x00\x00\x81\xff\xff\xac") == parse_measurement(encode_measurement(-45, 100))
    assert parse_measurement(b"\x00\x00\x81\xff\xff\xac").temperature_c == -45.0


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "length"),
        (b"\x66\x66\x93\x66\x66", "length"),
        (b"\x66\x66\x00\x66\x66\x93", "crc"),
        (b"\xff" * 6, "crc"),  # an idle bus reads all ones
    ],
)
def test_bad_frames(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_measurement(frame)
    assert caught.value.reason == reason


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=10))
def test_fuzz_random_frames(frame: bytes) -> None:
    outcome: Measurement | FrameError
    try:
        outcome = parse_measurement(frame)
    except FrameError as err:
        outcome = err
    if isinstance(outcome, FrameError):
        assert outcome.reason == ("length" if len(frame) != 6 else "crc")
    else:
        assert len(frame) == 6
        assert -45 <= outcome.temperature_c <= 130
        assert 0 <= outcome.humidity_pct <= 100


@settings(max_examples=1500, deadline=None)
@given(
    st.floats(min_value=-45, max_value=130),
    st.floats(min_value=0, max_value=100),
    st.integers(min_value=0, max_value=47),
)
def test_fuzz_every_single_bit_error_is_caught(temperature: float, humidity: float, bit: int) -> None:
    frame = encode_measurement(temperature, humidity)
    decoded = parse_measurement(frame)
    assert abs(decoded.temperature_c - temperature) < 0.01
    assert abs(decoded.humidity_pct - humidity) < 0.01
    corrupted = bytearray(frame)
    corrupted[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FrameError) as caught:
        parse_measurement(bytes(corrupted))
    assert caught.value.reason == "crc"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("i2c-1:0x44", I2cAddress(1, 0x44)),
        ("/dev/i2c-1:0x45", I2cAddress(1, 0x45)),
        ("i2c-10:68", I2cAddress(10, 0x44)),
        ("i2c-3", I2cAddress(3, 0x44)),
    ],
)
def test_addresses(text: str, expected: I2cAddress) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["/dev/ttyACM0", "i2c-1:0x80", "i2c-1:0x01", "i2c-x:0x44", "gpio:17"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="address"):
        parse_address(text)


PROFILE = I2cSensorProfile(id="sht3x", kind="i2c-sensor", vendor="Sensirion", model="SHT31")


def _driver(sensor: SimulatedSht3x, address: str = "i2c-1:0x44", poll: float = 0.005) -> Sht3xDriver:
    return Sht3xDriver(
        profile=PROFILE,
        binding=DeviceBinding(device_id="backroom-th", address=address),
        settings=EnvironmentSettings(zone="back-room", poll_interval_s=poll),
        bus_factory=sensor.bus_factory,
    )


async def test_open_resets_and_reads_the_real_climate() -> None:
    assert recorded_climate(), "the shared climate data is missing: see /work/shared/data/SOURCES.md"
    sensor = SimulatedSht3x(seed=7)
    async with _driver(sensor) as driver:
        assert sensor.commands == [SOFT_RESET, HEATER_OFF]
        temperature, humidity = await driver.read_once()
        assert sensor.commands[-1] == MEASURE_HIGH_REPEATABILITY
    for reading in (temperature, humidity):
        PAYLOAD_MODELS[reading.kind].model_validate(reading.payload)
        assert reading.payload["zone"] == "back-room"
    assert abs(float(temperature.payload["value"]) - sensor.sample.temperature_c) < 0.01  # type: ignore[arg-type]
    assert abs(float(humidity.payload["value"]) - sensor.sample.humidity_pct) < 0.01  # type: ignore[arg-type]
    assert (temperature.payload["unit"], humidity.payload["unit"]) == ("Cel", "%RH")
    assert driver.health().state is DriverState.CLOSED


async def test_nacks_and_bad_crcs_are_counted_and_polling_goes_on() -> None:
    sensor = SimulatedSht3x()
    async with _driver(sensor) as driver:
        sensor.nack(2)  # the measure command and the next one
        assert await driver.read_once() == []
        assert await driver.read_once() == []
        sensor.corrupt()
        assert await driver.read_once() == []
        assert driver.rejects.by_reason == {"nack": 2, "crc": 1}
        last_error = driver.health().last_error
        assert last_error is not None
        assert last_error.startswith("crc:")
        stream = driver.readings()
        sensor.advance()
        reading = await asyncio.wait_for(anext(stream), 5)
        await stream.aclose()  # type: ignore[attr-defined]
    assert abs(float(reading.payload["value"]) - sensor.sample.temperature_c) < 0.01  # type: ignore[arg-type]


async def test_reading_before_the_conversion_is_done_is_nacked() -> None:
    sensor = SimulatedSht3x(monotonic=FakeClock().monotonic)  # time stands still: the conversion never completes
    async with _driver(sensor) as driver:
        assert await driver.read_once() == []
    assert driver.rejects.by_reason == {"nack": 1}


async def test_a_sensor_that_never_answers_still_opens_and_goes_silent() -> None:
    sensor = SimulatedSht3x(address=0x45)  # nobody at 0x44: every transfer is NACKed
    settings_ = EnvironmentSettings(poll_interval_s=0.01, stale_after_s=0.2)
    profile = load_catalog().get("sht3x")
    driver = create_driver(profile, DeviceBinding(device_id="th-1", address="i2c-1:0x44"), settings_)
    assert isinstance(driver, MonitoredDriver)
    assert isinstance(driver.inner, Sht3xDriver)
    inner = Sht3xDriver(
        profile=driver.inner.profile, binding=driver.inner.binding, settings=settings_, bus_factory=sensor.bus_factory
    )
    monitored_driver = MonitoredDriver(inner=inner, binding=inner.binding, settings=settings_)
    async with monitored_driver:
        stale = await asyncio.wait_for(anext(monitored_driver.readings()), 5)
    assert stale.kind == "device.stale"
    assert stale.payload["reason"] == "silent"
    assert inner.rejects.by_reason["nack"] >= 3  # the reset and heater commands on open, then polls


async def test_an_adapter_that_is_gone_is_unavailable() -> None:
    sensor = SimulatedSht3x()
    async with _driver(sensor) as driver:
        stream = driver.readings()
        await anext(stream)
        sensor.remove_adapter()
        await anext(stream)  # the humidity reading of the same poll
        with pytest.raises(DeviceUnavailableError, match="gone"):
            await asyncio.wait_for(anext(stream), 5)
        assert driver.health().state is DriverState.DOWN
    with pytest.raises(DeviceUnavailableError, match="cannot open I2C bus 1"):
        async with _driver(sensor):
            pass
    with pytest.raises(DeviceUnavailableError, match="bus 2"):
        async with _driver(SimulatedSht3x(), address="i2c-2:0x44"):
            pass
    with pytest.raises(DriverError, match="not an I2C address"):
        async with _driver(SimulatedSht3x(), address="/dev/ttyUSB0"):
            pass


def test_errno_table_separates_gone_from_glitches() -> None:
    assert {ERRNO_REASONS[e] for e in (errno.ENODEV, errno.ENOENT)} == {"gone"}
    assert ERRNO_REASONS[errno.EREMOTEIO] == "nack"


async def test_the_real_smbus_on_a_missing_bus_is_unavailable() -> None:
    driver = Sht3xDriver(
        profile=PROFILE,
        binding=DeviceBinding(device_id="x", address="i2c-250:0x44"),
        settings=EnvironmentSettings(),
        bus_factory=smbus2.SMBus,
    )
    with pytest.raises(DeviceUnavailableError):
        async with driver:
            pass
