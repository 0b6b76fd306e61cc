"""The driver interface and the simulated temperature sensor."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count
from uuid import uuid4

import pytest

from device_drivers.base import (
    CommandNotSupportedError,
    DeviceUnavailableError,
    Driver,
    DriverError,
    DriverState,
    ProtocolError,
)
from device_drivers.simulated.temperature import SimulatedSensorConfig, SimulatedTemperatureSensor, temperature_at
from storegate import wire

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


def stepping_clock(step: timedelta = timedelta(minutes=10)) -> Callable[[], datetime]:
    """A clock that advances by ``step`` on every call, from T0."""
    ticks = count()
    return lambda: T0 + step * next(ticks)


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
        async with SimulatedTemperatureSensor(config=config, clock=stepping_clock()) as sensor:
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
