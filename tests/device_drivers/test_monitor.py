"""The environment monitor: pure alarm and stale state machines (table-driven), and the wrapper around a fake driver."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self
from uuid import uuid4

import pytest

from device_drivers.base import DeviceUnavailableError, DriverHealth, DriverState, Reading
from device_drivers.environment.monitor import MonitoredDriver, monitored
from device_drivers.environment.rules import StaleMachine, ThresholdMachine
from device_drivers.environment.settings import EnvironmentSettings, ThresholdAlarm
from device_drivers.ports import DeviceBinding
from storegate.wire import (
    PAYLOAD_MODELS,
    UNIT_OF,
    Command,
    CommandResult,
    EnvironmentReading,
    Quantity,
)
from tests.clocks import FakeClock
from tests.conftest import eventually

BASE = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T, H = Quantity.TEMPERATURE, Quantity.HUMIDITY


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


# --------------------------------------------------------------------------- threshold machine

CHILLER = ThresholdAlarm(high=5.0, low=0.0, delay_s=60, hysteresis=0.5)

# (rule, [(t, value)], expected transitions as (t of the reading, state, direction, since t))
THRESHOLD_CASES = [
    pytest.param(CHILLER, [(0, 4.0), (30, 4.9), (60, 5.0)], [], id="at the limit is inside"),
    pytest.param(CHILLER, [(0, 6.0), (59, 6.5)], [], id="beyond, shorter than the delay"),
    pytest.param(CHILLER, [(0, 6.0), (60, 6.5)], [(60, "raised", "high", 0)], id="beyond for the delay raises"),
    pytest.param(CHILLER, [(0, 6.0), (30, 4.0), (70, 6.0), (100, 6.0)], [], id="a dip back inside restarts the delay"),
    pytest.param(
        CHILLER,
        [(0, 6.0), (60, 6.0), (120, 7.0), (180, 4.8), (240, 4.5)],
        [(60, "raised", "high", 0), (240, "cleared", "high", 240)],
        id="raised once; cleared only hysteresis inside",
    ),
    pytest.param(
        CHILLER,
        [(0, -1.0), (60, -2.0), (61, 0.2), (62, 0.5)],
        [(60, "raised", "low", 0), (62, "cleared", "low", 62)],
        id="low side mirrors",
    ),
    pytest.param(
        CHILLER,
        [(0, 6.0), (60, 6.0), (70, -1.0), (130, -1.0)],
        [(60, "raised", "high", 0), (70, "cleared", "high", 70), (130, "raised", "low", 70)],
        id="high to low: cleared, then low after its own delay",
    ),
    pytest.param(
        ThresholdAlarm(quantity=H, high=70, delay_s=0, hysteresis=0),
        [(0, 71), (1, 72), (2, 70), (3, 71)],
        [(0, "raised", "high", 0), (2, "cleared", "high", 2), (3, "raised", "high", 3)],
        id="no delay, no hysteresis",
    ),
]


@pytest.mark.parametrize(("rule", "values", "expected"), THRESHOLD_CASES)
def test_threshold_machine(
    rule: ThresholdAlarm, values: list[tuple[float, float]], expected: list[tuple[float, str, str, float]]
) -> None:
    machine = ThresholdMachine(rule=rule)
    seen = []
    for t, value in values:
        for change in machine.observe(value, ts=at(t), at=t):
            limit = rule.high if change.direction == "high" else rule.low
            assert change.limit == limit
            assert change.value == value
            seen.append((t, change.state, change.direction, (change.since - BASE).total_seconds()))
    assert seen == expected


def test_threshold_delay_runs_on_the_monotonic_clock_not_the_timestamps() -> None:
    # A wall clock stepping 3 hours forward (NTP on a gateway without RTC) must not raise the alarm early.
    machine = ThresholdMachine(rule=CHILLER)
    assert machine.observe(6.0, ts=at(0), at=0) == []
    assert machine.observe(6.0, ts=at(3 * 3600), at=10) == []
    assert [c.state for c in machine.observe(6.0, ts=at(3 * 3600 + 50), at=60)] == ["raised"]


# --------------------------------------------------------------------------- stale machine

# Steps: ("r", t, quantity, value) a reading; ("c", t) a timer check. Expected: (t, reason, quantity).
STALE_CASES = [
    pytest.param([("r", 0, T, 4.0), ("c", 99)], [], id="not yet silent"),
    pytest.param([("r", 0, T, 4.0), ("c", 100), ("c", 500)], [(100, "silent", None)], id="silent once"),
    pytest.param(
        [("r", 0, T, 4.0), ("c", 100), ("r", 200, T, 4.1), ("c", 250), ("c", 300)],
        [(100, "silent", None), (200, "recovered", None), (300, "silent", None)],
        id="recovered, and silent again",
    ),
    pytest.param(
        [("r", 0, T, 4.0), ("r", 50, T, 4.0), ("r", 99, T, 4.0), ("r", 150, T, 4.0), ("r", 190, T, 4.0)],
        [(150, "stuck", T)],
        id="stuck once after stuck_after_s of one value",
    ),
    pytest.param(
        [("r", 0, T, 4.0), ("r", 50, T, 4.0), ("r", 100, T, 4.0), ("r", 120, T, 4.1), ("r", 130, T, 4.1)],
        [(100, "stuck", T), (120, "recovered", T)],
        id="a new value recovers",
    ),
    pytest.param(
        [("r", 0, T, 4.0), ("r", 50, H, 40.0), ("r", 60, T, 4.1), ("r", 99, H, 40.0), ("r", 150, H, 40.0)],
        [(150, "stuck", H)],
        id="per quantity",
    ),
]


@pytest.mark.parametrize(("steps", "expected"), STALE_CASES)
def test_stale_machine(steps: list[tuple[Any, ...]], expected: list[tuple[float, str, Quantity | None]]) -> None:
    machine = StaleMachine(stale_after_s=100, stuck_after_s=100)
    machine.start(ts=at(0), at=0)
    seen = []
    for step in steps:
        if step[0] == "r":
            _, t, quantity, value = step
            changes = machine.observe(ts=at(t), at=t, quantity=quantity, value=value)
        else:
            t = step[1]
            changes = machine.check(at=t)
        seen += [(t, c.reason, c.quantity) for c in changes]
    assert seen == expected


def test_stuck_needs_fresh_timestamps() -> None:
    # The same reading replayed (same timestamp) is not a stuck sensor.
    machine = StaleMachine(stale_after_s=1000, stuck_after_s=100)
    machine.start(ts=at(0), at=0)
    for t in (0, 50, 150, 300):
        assert machine.observe(ts=at(0), at=t, quantity=T, value=4.0) == []
    [stuck] = machine.observe(ts=at(301), at=301, quantity=T, value=4.0)
    assert (stuck.reason, stuck.value, stuck.since) == ("stuck", 4.0, at(0))


def test_silent_since_is_the_last_reading_or_the_start() -> None:
    machine = StaleMachine(stale_after_s=10, stuck_after_s=100)
    machine.start(ts=at(5), at=5)
    [silent] = machine.check(at=15)
    assert silent.since == at(5)
    assert machine.deadline() is None


# --------------------------------------------------------------------------- the wrapper


class FakeSensor:
    """An inner driver whose readings the test pushes; records what the wrapper did to it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.queue: asyncio.Queue[Reading | BaseException | None] = asyncio.Queue()
        self.entered = self.exited = 0
        self.cancelled_while_waiting = 0
        self.commands: list[Command] = []

    async def __aenter__(self) -> Self:
        self.entered += 1
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.exited += 1

    def push(self, quantity: Quantity, value: float) -> None:
        payload = EnvironmentReading(quantity=quantity, value=value, unit=UNIT_OF[quantity]).model_dump(
            mode="json", exclude_none=True
        )
        self.queue.put_nowait(
            Reading(device_id="fridge-1", kind="environment.reading", ts=self.clock.now(), payload=payload)
        )

    async def readings(self) -> AsyncIterator[Reading]:
        while True:
            try:
                item = await self.queue.get()
            except asyncio.CancelledError:
                self.cancelled_while_waiting += 1
                raise
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def execute(self, command: Command) -> CommandResult:
        self.commands.append(command)
        return CommandResult(
            command_id=command.command_id, store_id="s-1", gateway_id="gw-1", status="done", ts=self.clock.now()
        )

    def health(self) -> DriverHealth:
        return DriverHealth(state=DriverState.UP, readings_total=42)


SETTINGS = EnvironmentSettings(
    zone="chiller-1",
    alarms=[ThresholdAlarm(high=5.0, delay_s=60, hysteresis=0.5)],
    stale_after_s=120,
    stuck_after_s=600,
)


class Harness:
    def __init__(self, settings: EnvironmentSettings = SETTINGS) -> None:
        self.clock = FakeClock(start=BASE)
        self.inner = FakeSensor(self.clock)
        self.driver = MonitoredDriver(
            inner=self.inner,
            binding=DeviceBinding(device_id="fridge-1", address="x"),
            settings=settings,
            clock=self.clock,
        )
        self.out: list[Reading] = []
        self.error: BaseException | None = None
        self.finished = False

    async def consume(self) -> None:
        try:
            async for reading in self.driver.readings():
                model = PAYLOAD_MODELS[reading.kind]
                model.model_validate(reading.payload)  # every event validates against its wire model
                self.out.append(reading)
        except Exception as err:
            self.error = err
        self.finished = True

    async def until(self, count: int) -> list[Reading]:
        async def probe() -> bool:
            return len(self.out) >= count

        await eventually(probe, timeout=5, interval=0.001, what=f"{count} readings")
        return self.out

    def kinds(self) -> list[str]:
        return [r.kind for r in self.out]


async def test_readings_pass_through_and_a_local_alarm_is_raised_and_cleared(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    async with h.driver:
        task = asyncio.create_task(h.consume())
        h.inner.push(T, 4.0)
        await h.until(1)
        h.clock.advance(10)
        h.inner.push(T, 6.0)  # beyond from t=10
        await h.until(2)
        h.clock.advance(59)
        h.inner.push(T, 6.2)  # 59 s beyond: not yet
        await h.until(3)
        h.clock.advance(1)
        with caplog.at_level(logging.WARNING):
            h.inner.push(T, 6.4)  # 60 s: raised
            await h.until(5)
        h.clock.advance(10)
        h.inner.push(T, 4.7)  # inside, but not by the hysteresis
        h.clock.advance(10)
        h.inner.push(T, 4.5)  # cleared
        await h.until(8)
        task.cancel()
    assert h.kinds() == ["environment.reading"] * 4 + ["environment.alarm"] + ["environment.reading"] * 2 + [
        "environment.alarm"
    ]
    raised, cleared = h.out[4].payload, h.out[7].payload
    assert raised == {
        "state": "raised",
        "quantity": "temperature",
        "direction": "high",
        "limit": 5.0,
        "value": 6.4,
        "unit": "Cel",
        "zone": "chiller-1",
        "since": "2025-03-01T12:00:10Z",
    }
    assert (cleared["state"], cleared["value"], cleared["since"]) == ("cleared", 4.5, "2025-03-01T12:01:30Z")
    assert [r.payload for r in h.out[:4]] == [
        {"quantity": "temperature", "value": v, "unit": "Cel"} for v in (4.0, 6.0, 6.2, 6.4)
    ]  # passed through untouched
    assert any(r.levelno == logging.WARNING and "environment_alarm" in r.getMessage() for r in caplog.records)


async def test_silence_is_reported_once_without_cancelling_the_inner_generator() -> None:
    h = Harness()
    async with h.driver:
        task = asyncio.create_task(h.consume())
        h.inner.push(T, 4.0)
        await h.until(1)
        h.clock.advance(119)
        await asyncio.sleep(0.01)
        assert h.kinds() == ["environment.reading"]
        h.clock.advance(1)
        await h.until(2)
        h.clock.advance(1000)  # still silent: no second event
        await asyncio.sleep(0.01)
        assert h.kinds() == ["environment.reading", "device.stale"]
        assert h.out[1].payload == {"reason": "silent", "since": "2025-03-01T12:00:00Z", "zone": "chiller-1"}
        assert h.inner.cancelled_while_waiting == 0  # the inner __anext__ was never cancelled by the timer
        h.inner.push(T, 4.2)
        await h.until(4)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert h.kinds()[2:] == ["environment.reading", "device.stale"]
    assert h.out[3].payload["reason"] == "recovered"


async def test_a_value_stuck_with_fresh_timestamps_is_reported_then_recovered() -> None:
    h = Harness(EnvironmentSettings(stale_after_s=1000, stuck_after_s=300))
    async with h.driver:
        task = asyncio.create_task(h.consume())
        for i in range(7):  # 4.0 at t = 0, 60 ... 360: stuck from t=300
            h.inner.push(T, 4.0)
            await h.until(i + 1 + (i >= 5))
            h.clock.advance(60)
        h.inner.push(T, 4.3)
        await h.until(10)
        task.cancel()
    stale = [r for r in h.out if r.kind == "device.stale"]
    assert [s.payload for s in stale] == [
        {"reason": "stuck", "quantity": "temperature", "since": "2025-03-01T12:00:00Z", "value": 4.0},
        {"reason": "recovered", "quantity": "temperature", "since": "2025-03-01T12:07:00Z"},
    ]
    assert h.kinds().index("device.stale") == 6  # right after the reading at t=300


async def test_end_and_errors_of_the_inner_driver_come_through() -> None:
    h = Harness()
    async with h.driver:
        h.inner.queue.put_nowait(DeviceUnavailableError("unplugged"))
        await h.consume()
    assert isinstance(h.error, DeviceUnavailableError)
    h2 = Harness()
    async with h2.driver:
        h2.inner.push(T, 3.0)
        h2.inner.queue.put_nowait(None)
        await h2.consume()
    assert h2.error is None
    assert h2.kinds() == ["environment.reading"]


async def test_execute_health_and_lifecycle_are_the_inner_drivers() -> None:
    h = Harness()
    command = Command(command_id=uuid4(), store_id="s-1", gateway_id="gw-1", name="ping", issued_at=BASE)
    async with h.driver as opened:
        assert opened is h.driver
        assert h.inner.entered == 1
        result = await h.driver.execute(command)
    assert h.inner.exited == 1
    assert result.status == "done"
    assert h.inner.commands == [command]
    assert h.driver.health().readings_total == 42
    wrapped = monitored(h.inner, binding=DeviceBinding(device_id="d", address="x"), settings=SETTINGS)
    assert isinstance(wrapped, MonitoredDriver)
    assert wrapped.inner is h.inner


async def test_stopping_the_consumer_stops_the_pump() -> None:
    h = Harness()
    async with h.driver:
        stream = h.driver.readings()
        h.inner.push(T, 1.0)
        assert (await anext(stream)).payload["value"] == 1.0
        await stream.aclose()  # type: ignore[attr-defined]
    # The pump task is gone with it: no task other than this test's is left running.
    await asyncio.sleep(0)
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == []
