"""The driver interface, the simulated temperature sensor and the simulated sequence device."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from device_drivers.base import (
    CommandNotSupportedError,
    DeviceUnavailableError,
    Driver,
    DriverError,
    DriverState,
    ProtocolError,
    Reading,
    Resumable,
)
from device_drivers.simulated.sequence import (
    SimulatedSequenceConfig,
    SimulatedSequenceDevice,
    TokenBucket,
    payload_of,
    reading_number,
)
from device_drivers.simulated.temperature import SimulatedSensorConfig, SimulatedTemperatureSensor, temperature_at
from storegate import wire
from tests.clocks import FakeClock

T0 = datetime(2025, 3, 1, 0, 0, tzinfo=UTC)


def sensor_config(**overrides: object) -> SimulatedSensorConfig:
    fields: dict[str, object] = {
        "device_id": "chiller-1",
        "driver": "simulated-temperature",
        "zone": "chiller-1",
        "interval_s": 0.01,
        "base_celsius": 4.0,
        "amplitude_celsius": 1.0,
        "noise_celsius": 0.2,
        "seed": 42,
    }
    return SimulatedSensorConfig.model_validate({**fields, **overrides})


def command(name: str) -> wire.Command:
    return wire.Command(
        command_id=uuid4(), store_id="s1", gateway_id="g1", device_id="chiller-1", name=name, issued_at=T0
    )


def test_exception_tree_and_retryability() -> None:
    for error in (DeviceUnavailableError, ProtocolError, CommandNotSupportedError):
        assert issubclass(error, DriverError)
    assert DeviceUnavailableError.retryable
    assert not ProtocolError.retryable
    assert not CommandNotSupportedError.retryable


def test_the_simulator_is_a_driver() -> None:
    assert isinstance(SimulatedTemperatureSensor(config=sensor_config()), Driver)


def test_daily_curve_peaks_in_the_afternoon_and_bottoms_out_at_night() -> None:
    def at(hour: int) -> float:
        return temperature_at(T0.replace(hour=hour), base=4.0, amplitude=2.0, noise_sample=0.0)

    assert at(15) == 6.0
    assert at(3) == 2.0
    assert at(9) == at(21) == 4.0


async def test_readings_are_valid_environment_events_and_repeat_for_the_same_seed() -> None:
    async def first_values(config: SimulatedSensorConfig, n: int) -> list[float]:
        values = []
        # A reading every 10 minutes of virtual time, from T0.
        every_ten_minutes = config.model_copy(update={"interval_s": 600})
        clock = FakeClock(start=T0, autojump=True)
        async with SimulatedTemperatureSensor(config=every_ten_minutes, clock=clock) as sensor:
            async for reading in sensor.readings():
                assert (reading.device_id, reading.kind) == ("chiller-1", "environment.reading")
                payload = wire.EnvironmentReading.model_validate(reading.payload)
                assert (payload.quantity, payload.unit, payload.zone) == (wire.Quantity.TEMPERATURE, "Cel", "chiller-1")
                values.append(payload.value)
                if len(values) == n:
                    break
        return values

    first = await first_values(sensor_config(), 5)
    assert first == await first_values(sensor_config(), 5)
    assert first != await first_values(sensor_config(seed=43), 5)
    assert all(2.0 < value < 6.0 for value in first)


async def test_readings_need_an_open_driver_and_health_follows_the_lifecycle() -> None:
    sensor = SimulatedTemperatureSensor(config=sensor_config(noise_celsius=0))
    assert sensor.health().state is DriverState.CLOSED
    with pytest.raises(DeviceUnavailableError):
        await anext(sensor.readings())
    async with sensor:
        reading = await anext(sensor.readings())
        health = sensor.health()
        assert (health.state, health.readings_total, health.last_reading_at) == (DriverState.UP, 1, reading.ts)
    assert sensor.health().state is DriverState.CLOSED


async def test_commands() -> None:
    async with SimulatedTemperatureSensor(config=sensor_config()) as sensor:
        result = await sensor.execute(command("ping"))
        assert (result.status, result.detail) == ("done", "pong")
        with pytest.raises(CommandNotSupportedError, match="tare"):
            await sensor.execute(command("tare"))


# --------------------------------------------------------------------------- the sequence device


def sequence_config(**overrides: object) -> SimulatedSequenceConfig:
    fields: dict[str, object] = {"device_id": "door-1", "driver": "simulated-sequence", "count": 10, "rate_per_s": 5}
    return SimulatedSequenceConfig.model_validate({**fields, **overrides})


async def take(device: SimulatedSequenceDevice, n: int) -> list[Reading]:
    readings = []
    async with device:
        async for reading in device.readings():
            readings.append(reading)
            if len(readings) == n:
                break
    return readings


def test_the_sequence_device_is_a_resumable_driver() -> None:
    device = SimulatedSequenceDevice(config=sequence_config())
    assert isinstance(device, Driver)
    assert isinstance(device, Resumable)
    assert not isinstance(SimulatedTemperatureSensor(config=sensor_config()), Resumable)


@pytest.mark.parametrize("kind", ["environment.reading", "door.contact", "sale.item"])
async def test_sequence_readings_are_numbered_valid_and_identify_themselves(kind: str) -> None:
    device = SimulatedSequenceDevice(
        config=sequence_config(kind=kind, seed=4), clock=FakeClock(monotonic=100.0, autojump=True)
    )
    readings = await take(device, 10)
    assert [r.source_seq for r in readings] == list(range(1, 11))
    assert {(r.device_id, r.kind) for r in readings} == {("door-1", kind)}
    for n, reading in enumerate(readings, start=1):
        event = wire.Event(
            event_id=uuid4(), store_id="s1", gateway_id="g1", stream=uuid4(), seq=n, device_id=reading.device_id,
            kind=reading.kind, ts=reading.ts, payload=reading.payload,
        )  # fmt: skip
        assert reading_number(event.kind, event.payload) == n
        # The payload is a function of (kind, n, seed): a replay is identical.
        assert reading.payload == payload_of(kind, n, seed=4)
    if kind == "environment.reading":
        assert wire.EnvironmentReading.model_validate(readings[2].payload).value == 0.03


async def test_sequence_device_resumes_after_the_committed_number_and_then_goes_quiet() -> None:
    device = SimulatedSequenceDevice(config=sequence_config(count=10), clock=FakeClock(monotonic=100.0, autojump=True))
    device.resume_after(7)
    readings = await take(device, 3)
    assert [r.source_seq for r in readings] == [8, 9, 10]
    device.resume_after(None)
    assert [r.source_seq for r in await take(device, 2)] == [1, 2]
    device.resume_after(10)
    async with device:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(device.readings()), timeout=0.05)


async def test_sequence_device_keeps_its_rate_on_a_token_bucket() -> None:
    clock = FakeClock(monotonic=100.0, autojump=True)
    device = SimulatedSequenceDevice(config=sequence_config(count=1000, rate_per_s=50), clock=clock)
    start = clock.monotonic()
    readings = await take(device, 501)
    # 50 a second: the 501st reading is due 10 s after the first, without drift.
    assert clock.monotonic() - start == pytest.approx(10.0)
    assert len(readings) == 501


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert bucket.take(0.0) == 0.0  # one token to start with
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.1) == 0.0
    # A consumer that stalled gets at most ``burst`` at once, not everything it missed.
    assert [bucket.take(10.0) for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.1)]
