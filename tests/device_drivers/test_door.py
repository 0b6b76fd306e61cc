"""Door contacts: the debouncer (tables, fuzzing), polarity, addresses, GPIO on gpiozero mock pins, Modbus RTU."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from device_drivers.base import DeviceUnavailableError, DriverError, DriverState, Reading
from device_drivers.door.driver import GpioDoorDriver, ModbusDoorDriver, create
from device_drivers.door.profile import DoorProfile, DoorSettings
from device_drivers.door.protocol import Debouncer, door_is_open, parse_gpio_address
from device_drivers.door.simulator import SimulatedDoorModule, SimulatedGpioContact
from device_drivers.ports import DeviceBinding
from device_drivers.profiles import load_catalog
from device_drivers.simulated.pty import NullModem
from storegate.wire import PAYLOAD_MODELS
from tests.conftest import eventually

# --------------------------------------------------------------------------- pure logic

# Raw samples (t, level) from stable False; expected: (t, new state). debounce 0.05 s.
DEBOUNCE_CASES = [
    pytest.param([(0.0, True), (0.049, True)], [], id="not yet stable"),
    pytest.param([(0.0, True), (0.05, True)], [(0.05, True)], id="stable for debounce_s"),
    pytest.param([(0.0, True), (0.01, False), (0.02, True), (0.06, True)], [], id="bounce restarts the wait"),
    pytest.param([(0.0, True), (0.02, True), (0.03, False), (1.0, False)], [], id="back before stable: nothing"),
    pytest.param(
        [(0.0, True), (0.1, True), (0.2, False), (0.3, False)], [(0.1, True), (0.3, False)], id="open then close"
    ),
]


@pytest.mark.parametrize(("samples", "expected"), DEBOUNCE_CASES)
def test_debouncer(samples: list[tuple[float, bool]], expected: list[tuple[float, bool]]) -> None:
    debouncer = Debouncer(debounce_s=0.05, initial=False)
    seen = [(t, changed) for t, level in samples if (changed := debouncer.feed(level, t)) is not None]
    assert seen == expected


def test_debouncer_deadline_and_poll() -> None:
    debouncer = Debouncer(debounce_s=0.05, initial=True)
    assert debouncer.deadline is None
    assert debouncer.feed(False, 10.0) is None
    assert debouncer.deadline == pytest.approx(10.05)
    assert debouncer.poll(10.04) is None
    assert debouncer.poll(10.05) is False
    assert debouncer.deadline is None
    assert Debouncer(debounce_s=0, initial=False).feed(True, 0) is True  # no debounce: at once


@settings(max_examples=1500, deadline=None)
@given(
    st.booleans(),
    st.floats(min_value=0, max_value=0.5),
    st.lists(st.tuples(st.floats(min_value=0, max_value=0.2), st.booleans()), max_size=40),
)
def test_fuzz_debouncer(initial: bool, debounce_s: float, steps: list[tuple[float, bool]]) -> None:
    debouncer = Debouncer(debounce_s=debounce_s, initial=initial)
    now = 0.0
    state = initial
    history: list[tuple[float, bool]] = []  # the raw level from each time on
    for gap, level in steps:
        now += gap
        history.append((now, level))
        changed = debouncer.feed(level, now)
        if changed is not None:
            # A change alternates, and the level has been the new one for at least debounce_s.
            assert changed is not state
            state = changed
            held_since = now
            for t, past in reversed(history):
                if past is not changed:
                    break
                held_since = t
            assert now - held_since >= debounce_s - 1e-9
        assert debouncer.state is state
    # After quiet time the state settles on the last raw level.
    last = history[-1][1] if history else initial
    settled = debouncer.poll(now + debounce_s + 1)
    assert debouncer.state is last
    assert settled in (None, last)


@pytest.mark.parametrize(
    ("conducting", "normally_open", "is_open"),
    [(True, False, False), (False, False, True), (True, True, True), (False, True, False)],
)
def test_polarity(conducting: bool, normally_open: bool, is_open: bool) -> None:
    assert door_is_open(conducting, normally_open=normally_open) is is_open


@pytest.mark.parametrize(("address", "pin"), [("gpio:17", 17), ("GPIO:4", 4), ("gpio:BOARD11", "BOARD11")])
def test_gpio_addresses(address: str, pin: int | str) -> None:
    assert parse_gpio_address(address) == pin


@pytest.mark.parametrize("address", ["17", "gpio:", "gpio:x", "/dev/ttyUSB0", "gpio:17:1"])
def test_bad_gpio_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="GPIO address"):
        parse_gpio_address(address)


# --------------------------------------------------------------------------- GPIO

GPIO_PROFILE = DoorProfile(id="door-gpio-reed", kind="door", vendor="generic", model="reed", input="gpio")


def _gpio(factory: MockFactory, settings_: DoorSettings, address: str = "gpio:17") -> GpioDoorDriver:
    return GpioDoorDriver(
        profile=GPIO_PROFILE,
        binding=DeviceBinding(device_id="back-door", address=address),
        settings=settings_,
        pin_factory=factory,
    )


class Collector:
    def __init__(self, driver: GpioDoorDriver | ModbusDoorDriver) -> None:
        self.out: list[Reading] = []
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run(driver))

    async def _run(self, driver: GpioDoorDriver | ModbusDoorDriver) -> None:
        try:
            async for reading in driver.readings():
                PAYLOAD_MODELS[reading.kind].model_validate(reading.payload)
                self.out.append(reading)
        except Exception as err:
            self.error = err

    async def until(self, count: int) -> None:
        async def probe() -> bool:
            return len(self.out) >= count or self.error is not None

        await eventually(probe, timeout=5, interval=0.005, what=f"{count} door events")

    def events(self) -> list[tuple[str, bool]]:
        return [(r.kind, bool(r.payload["open"])) for r in self.out]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_gpio_contact_reports_its_state_and_debounced_changes() -> None:
    factory = MockFactory()
    contact = SimulatedGpioContact(pin=factory.pin(17))
    async with _gpio(factory, DoorSettings(zone="back-door", debounce_s=0.05)) as driver:
        # (After opening: claiming the mock pin with a pull-up resets its level, unlike a real contact.)
        contact.set_door(False)  # NC loop: closed door, the contact conducts
        events = Collector(driver)
        await events.until(1)
        assert events.out[0].payload == {"zone": "back-door", "open": False}
        contact.bounce(True)  # chatter, ending open
        await events.until(2)
        contact.bounce(False, flips=4)
        await events.until(3)
        contact.set_door(True)
        contact.set_door(False)  # a blip shorter than the debounce
        await asyncio.sleep(0.15)  # three debounce periods: long enough that a blip would have been reported
        await events.stop()
    assert events.events() == [("door.closed", False), ("door.opened", True), ("door.closed", False)]
    assert driver.door_open is False
    assert driver.health().readings_total == 3


async def test_gpio_normally_open_contact() -> None:
    factory = MockFactory()
    contact = SimulatedGpioContact(pin=factory.pin(22), normally_open=True)
    async with _gpio(factory, DoorSettings(normally_open=True, debounce_s=0.0), "gpio:22") as driver:
        contact.set_door(True)
        assert factory.pin(22).state is False  # NO contact: an open door conducts, pulling the pin low
        events = Collector(driver)
        await events.until(1)
        contact.set_door(False)
        await events.until(2)
        await events.stop()
    assert events.events() == [("door.opened", True), ("door.closed", False)]


async def test_gpio_bad_pin_or_address() -> None:
    with pytest.raises(DeviceUnavailableError, match="gpio:99"):
        async with _gpio(MockFactory(), DoorSettings(), "gpio:99"):
            pass
    driver = _gpio(MockFactory(), DoorSettings(), "/dev/ttyUSB0")
    with pytest.raises(DriverError, match="GPIO address"):
        async with driver:
            pass
    assert driver.health().state is DriverState.DOWN


# --------------------------------------------------------------------------- Modbus RTU

MODBUS_PROFILE = load_catalog().get("door-modbus-di")


def _modbus(port: str, **settings: object) -> ModbusDoorDriver:
    assert isinstance(MODBUS_PROFILE, DoorProfile)
    profile = MODBUS_PROFILE.model_copy(update={"response_timeout_s": 0.1, "max_missed_polls": 2})
    driver = create(
        profile=profile,
        binding=DeviceBinding(device_id="cold-room-door", address=port),
        settings=DoorSettings(zone="cold-room", poll_interval_s=0.02, debounce_s=0.0, **settings),
    )
    assert isinstance(driver, ModbusDoorDriver)
    return driver


async def test_modbus_discrete_input_door() -> None:
    async with NullModem() as modem, SimulatedDoorModule(port=modem.device_port, unit=3) as module:
        module.set_input(5, True)  # NC contact on input 5 conducts: the door is closed
        async with _modbus(modem.port, unit=3, input_index=5) as driver:
            events = Collector(driver)
            await events.until(1)
            module.set_input(5, False)
            await events.until(2)
            module.set_input(4, False)  # another input: nothing
            module.set_input(5, True)
            await events.until(3)
            requests = module.requests
            await eventually(lambda: _true(module.requests > requests + 2), timeout=5, interval=0.01, what="polls")
            await events.stop()
    assert events.events() == [("door.closed", False), ("door.opened", True), ("door.closed", False)]
    assert events.out[1].payload == {"zone": "cold-room", "open": True}


async def test_modbus_module_that_stops_answering_is_unavailable() -> None:
    async with (
        NullModem() as modem,
        SimulatedDoorModule(port=modem.device_port) as module,
        _modbus(modem.port) as driver,
    ):
        events = Collector(driver)
        await events.until(1)
        module.silent = True
        await events.until(2)
        module.silent = False
    assert isinstance(events.error, DeviceUnavailableError)
    assert "2 polls failed" in str(events.error)
    assert driver.rejects.by_reason["no_answer"] == 2


async def test_modbus_unplugged_is_unavailable() -> None:
    async with NullModem() as modem, SimulatedDoorModule(port=modem.device_port), _modbus(modem.port) as driver:
        events = Collector(driver)
        await events.until(1)
        modem.unplug()
        await events.until(2)
        await events.stop()
    assert isinstance(events.error, DeviceUnavailableError)
    with pytest.raises(DeviceUnavailableError):
        async with _modbus("/dev/nonexistent-door-port"):
            pass


async def _true(value: bool) -> bool:
    return value


def test_shipped_door_profiles() -> None:
    catalog = load_catalog()
    kinds = {pid: catalog.get(pid) for pid in ("door-gpio-reed", "door-modbus-di")}
    assert [p.input for p in kinds.values() if isinstance(p, DoorProfile)] == ["gpio", "modbus"]
    assert list(itertools.islice(iter(DoorSettings().model_dump()), 3)) == ["zone", "debounce_s", "normally_open"]
