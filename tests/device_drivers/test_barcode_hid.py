"""Keyboard-wedge scanners: key decoding tables, and the HID driver over a fake evdev device."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_drivers.barcode.driver import HidBarcodeDriver, create
from device_drivers.barcode.keymap import EV_KEY, KEY_CODES, US_LAYOUT, KeyDecoder
from device_drivers.barcode.profile import BarcodeProfile, BarcodeSettings
from device_drivers.base import DeviceUnavailableError, DriverState, Reading
from device_drivers.ports import DeviceBinding
from device_drivers.profiles import parse_profile
from storegate.wire import Command
from tests.clocks import FakeClock
from tests.conftest import eventually

K = KEY_CODES
EV_SYN, EV_MSC = 0, 4
GS = "\x1d"
_CHAR_KEYS = {
    char: (code, shifted)
    for code, pair in US_LAYOUT.items()
    if code < 55 or code == 57
    for shifted, char in enumerate(pair)
}


def press(code: int) -> list[tuple[int, int, int]]:
    """A key pressed and released, with the EV_MSC scancode and EV_SYN a real keyboard sends."""
    return [(EV_MSC, 4, 0x7000E), (EV_KEY, code, 1), (EV_SYN, 0, 0), (EV_KEY, code, 0), (EV_SYN, 0, 0)]


def typed(text: str, *, enter: bool = True, gs_key: str | None = None) -> list[tuple[int, int, int]]:
    """The events a US-keyboard scanner sends to type ``text`` (GS as Ctrl+], or ``gs_key``)."""
    events: list[tuple[int, int, int]] = []
    for char in text:
        if char == GS and gs_key is not None:
            events += press(K[gs_key])
        elif char == GS:
            events += [(EV_KEY, K["KEY_LEFTCTRL"], 1), *press(K["KEY_RIGHTBRACE"]), (EV_KEY, K["KEY_LEFTCTRL"], 0)]
        else:
            code, shifted = _CHAR_KEYS[char]
            if shifted:
                events.append((EV_KEY, K["KEY_LEFTSHIFT"], 1))
            events += press(code)
            if shifted:
                events.append((EV_KEY, K["KEY_LEFTSHIFT"], 0))
    if enter:
        events += press(K["KEY_ENTER"])
    return events


def decode_all(events: list[tuple[int, int, int]], decoder: KeyDecoder | None = None) -> list[str]:
    decoder = decoder or KeyDecoder()
    out = []
    for event in events:
        keyed = decoder.feed(*event)
        if keyed is not None:
            out.append(keyed.text if not keyed.unknown_keys else f"<unknown {keyed.unknown_keys}>")
    return out


# --------------------------------------------------------------------------- decoding tables


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (press(K["KEY_1"]) + press(K["KEY_0"]) + press(K["KEY_ENTER"]), ["10"]),
        (press(K["KEY_A"]) + press(K["KEY_ENTER"]), ["a"]),
        (
            [
                (EV_KEY, K["KEY_RIGHTSHIFT"], 1),
                *press(K["KEY_A"]),
                (EV_KEY, K["KEY_RIGHTSHIFT"], 0),
                *press(K["KEY_A"]),
                *press(K["KEY_ENTER"]),
            ],
            ["Aa"],
        ),
        (
            [
                (EV_KEY, K["KEY_LEFTSHIFT"], 1),
                *press(K["KEY_RIGHTBRACE"]),
                (EV_KEY, K["KEY_LEFTSHIFT"], 0),
                *press(K["KEY_E"]),
                *press(K["KEY_ENTER"]),
            ],
            ["}e"],
        ),
        (typed("]E05901234123457"), ["]E05901234123457"]),
        (typed("Code 128-/.!@#"), ["Code 128-/.!@#"]),
        (typed("]C101095011010209171" + GS + "10AB"), ["]C101095011010209171" + GS + "10AB"]),
        (press(K["KEY_KP4"]) + press(K["KEY_KP2"]) + press(K["KEY_KPENTER"]), ["42"]),  # keypad mode
        (press(K["KEY_ENTER"]) + press(K["KEY_ENTER"]), []),  # empty lines are not codes
        (press(K["KEY_CAPSLOCK"]) + press(K["KEY_Q"]) + press(K["KEY_ENTER"]), ["q"]),  # locks ignored
        (
            [
                (EV_KEY, K["KEY_7"], 1),
                (EV_KEY, K["KEY_7"], 2),
                (EV_KEY, K["KEY_7"], 2),
                (EV_KEY, K["KEY_7"], 0),
                *press(K["KEY_ENTER"]),
            ],
            ["7"],
        ),  # autorepeat is not typing
        (press(K["KEY_1"]) + press(K["KEY_F1"]) + press(K["KEY_ENTER"]), [f"<unknown ({K['KEY_F1']},)>"]),
        (press(K["KEY_1"]) + press(999) + press(K["KEY_ENTER"]), ["<unknown (999,)>"]),
        (typed("12", enter=False) + typed("3"), ["123"]),
    ],
)
def test_key_events_decode_to_the_typed_code(events: list[tuple[int, int, int]], expected: list[str]) -> None:
    assert decode_all(events) == expected


def test_fnc1_mapped_to_a_function_key_decodes_to_gs() -> None:
    decoder = KeyDecoder(gs_key=K["KEY_F8"])
    assert decode_all(typed("01" + GS + "10X", gs_key="KEY_F8"), decoder) == ["01" + GS + "10X"]
    assert decode_all(typed("01" + GS + "10X"), decoder) == ["01" + GS + "10X"]  # Ctrl+] still means GS


def test_ctrl_with_a_letter_types_its_control_character() -> None:
    events = [(EV_KEY, K["KEY_RIGHTCTRL"], 1), *press(K["KEY_M"]), (EV_KEY, K["KEY_RIGHTCTRL"], 0)]
    assert decode_all(events + press(K["KEY_ENTER"])) == ["\r"]


def test_the_decoder_knows_a_partial_code_and_forgets_it_on_reset() -> None:
    decoder = KeyDecoder()
    decode_all(typed("123", enter=False), decoder)
    assert decoder.pending
    decoder.reset()
    assert not decoder.pending
    assert decode_all(typed("9"), decoder) == ["9"]


@settings(max_examples=1000, deadline=None)
@given(st.text(st.sampled_from([*sorted(_CHAR_KEYS), GS]), min_size=1, max_size=40))
def test_any_typed_text_decodes_back_to_itself(text: str) -> None:
    assert decode_all(typed(text)) == [text]


EVENTS = st.tuples(
    st.sampled_from([EV_KEY, EV_KEY, EV_KEY, EV_SYN, EV_MSC, 17]),
    st.one_of(st.sampled_from(sorted(KEY_CODES.values())), st.integers(-5, 300)),
    st.sampled_from([1, 1, 0, 2, -1, 3]),
)


@settings(max_examples=1200, deadline=None)
@given(st.lists(EVENTS, max_size=60))
def test_random_event_streams_never_raise_and_end_codes_only_on_enter(events: list[tuple[int, int, int]]) -> None:
    decoder = KeyDecoder(max_length=20)
    for event in events:
        keyed = decoder.feed(*event)
        if keyed is not None:
            assert event[0] == EV_KEY
            assert event[1] in (K["KEY_ENTER"], K["KEY_KPENTER"])
            assert event[2] == 1
            assert keyed.text or keyed.unknown_keys
            assert len(keyed.text) <= 21


# --------------------------------------------------------------------------- the HID driver


@dataclass
class FakeEvent:
    type: int
    code: int
    value: int


class FakeInputDevice:
    """The small surface of evdev.InputDevice the driver uses; events are pushed by the test."""

    def __init__(self, *, grab_error: OSError | None = None) -> None:
        self.events: asyncio.Queue[tuple[int, int, int] | OSError] = asyncio.Queue()
        self.grab_error = grab_error
        self.grabbed = False
        self.grab_calls = 0
        self.ungrab_calls = 0
        self.closed = False

    def push(self, events: list[tuple[int, int, int]]) -> None:
        for event in events:
            self.events.put_nowait(event)

    def unplug(self) -> None:
        self.events.put_nowait(OSError(errno.ENODEV, "No such device"))

    def grab(self) -> None:
        self.grab_calls += 1
        if self.grab_error is not None:
            raise self.grab_error
        self.grabbed = True

    def ungrab(self) -> None:
        self.ungrab_calls += 1
        if not self.grabbed:
            raise OSError(errno.EINVAL, "not grabbed")
        self.grabbed = False

    def close(self) -> None:
        self.closed = True

    async def async_read_loop(self) -> AsyncIterator[FakeEvent]:
        while True:
            item = await self.events.get()
            if isinstance(item, OSError):
                self.grabbed = False  # the node is gone; so is the grab
                raise item
            yield FakeEvent(*item)


T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HID_PROFILE = parse_profile(
    {"id": "test-hid", "kind": "barcode", "vendor": "Zebra", "model": "DS", "interface": "hid", "gs_key": "KEY_F8"}
)
ADDRESS = "/dev/input/by-id/usb-Symbol_Technologies-event-kbd"


def hid_driver(device: FakeInputDevice, *, settings: BarcodeSettings | None = None) -> HidBarcodeDriver:
    assert isinstance(HID_PROFILE, BarcodeProfile)
    opened: list[str] = []

    def open_device(address: str) -> FakeInputDevice:
        opened.append(address)
        return device

    driver = HidBarcodeDriver(
        profile=HID_PROFILE,
        binding=DeviceBinding(device_id="till-1-scanner", address=ADDRESS),
        settings=settings or BarcodeSettings(),
        open_device=open_device,
        clock=FakeClock(start=T0),
    )
    driver.opened = opened  # type: ignore[attr-defined]
    return driver


async def collect(driver: HidBarcodeDriver, into: list[Reading]) -> None:
    async for reading in driver.readings():
        into.append(reading)


async def test_create_picks_the_hid_driver_for_a_hid_profile() -> None:
    assert isinstance(HID_PROFILE, BarcodeProfile)
    driver = create(
        profile=HID_PROFILE, binding=DeviceBinding(device_id="s", address=ADDRESS), settings=BarcodeSettings()
    )
    assert isinstance(driver, HidBarcodeDriver)


async def test_hid_scans_become_readings_with_the_device_grabbed_and_released_on_exit() -> None:
    device = FakeInputDevice()
    driver = hid_driver(device)
    readings: list[Reading] = []
    async with driver:
        assert driver.opened == [ADDRESS]  # type: ignore[attr-defined]
        assert device.grabbed
        assert device.grab_calls == 1
        task = asyncio.create_task(collect(driver, readings))
        device.push(typed("]E05901234123457") + typed("]C10109501101020917" + GS + "10LOT1", gs_key="KEY_F8"))

        async def two() -> bool:
            return len(readings) == 2

        await eventually(two, what="two scans")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert device.ungrab_calls == 1
    assert device.closed
    assert driver.health().state is DriverState.CLOSED
    assert readings[0].kind == "scan.sale"
    assert readings[0].device_id == "till-1-scanner"
    assert readings[0].ts == T0
    assert readings[0].payload == {
        "code": "5901234123457",
        "symbology": "ean13",
        "symbology_guessed": False,
        "mode": "checkout",
        "gtin": "05901234123457",
        "quantity": 1,
        "ai": {},
        "gs1_incomplete": False,
    }
    assert readings[1].payload["gtin"] == "09501101020917"
    assert readings[1].payload["batch"] == "LOT1"


async def test_hid_bad_codes_are_counted_and_good_ones_still_flow() -> None:
    device = FakeInputDevice()
    driver = hid_driver(device)
    readings: list[Reading] = []
    async with driver:
        task = asyncio.create_task(collect(driver, readings))
        device.push(typed("]E05901234123458"))  # bad check digit
        device.push(press(K["KEY_1"]) + press(K["KEY_F1"]) + press(K["KEY_ENTER"]))  # a key with no character
        device.push(typed("]I130712345000010"))  # ITF
        device.push(typed("]E448512343"))

        async def one() -> bool:
            return len(readings) == 1

        await eventually(one, what="the good scan")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert readings[0].payload["symbology"] == "ean8"
    assert driver.rejected_total == 3
    assert dict(driver.rejected_by_reason) == {
        "bad_check_digit": 1,
        "illegal_characters": 1,
        "unsupported_symbology": 1,
    }
    assert "unsupported_symbology" in (driver.health().last_error or "")


async def test_hid_unplug_mid_code_discards_it_counts_it_and_raises_unavailable() -> None:
    device = FakeInputDevice()
    driver = hid_driver(device)
    readings: list[Reading] = []
    async with driver:
        device.push(typed("]E05901234123457") + typed("]E0590123", enter=False))
        device.unplug()
        with pytest.raises(DeviceUnavailableError, match="unplugged"):
            await collect(driver, readings)
        assert driver.health().state is DriverState.DOWN
    assert [r.payload["code"] for r in readings] == ["5901234123457"]
    assert driver.partial_discarded_total == 1
    assert driver.rejected_by_reason["partial"] == 1
    assert device.closed  # ungrab failed on the gone device; close still happened


async def test_hid_unplug_between_codes_discards_nothing() -> None:
    device = FakeInputDevice()
    driver = hid_driver(device)
    async with driver:
        device.push(typed("]E05901234123457"))
        device.unplug()
        readings: list[Reading] = []
        with pytest.raises(DeviceUnavailableError):
            await collect(driver, readings)
    assert len(readings) == 1
    assert driver.partial_discarded_total == 0
    assert driver.rejected_total == 0


async def test_hid_open_and_grab_failures_are_device_unavailable() -> None:
    def missing(address: str) -> FakeInputDevice:
        raise FileNotFoundError(errno.ENOENT, "No such file", address)

    assert isinstance(HID_PROFILE, BarcodeProfile)
    driver = HidBarcodeDriver(
        profile=HID_PROFILE,
        binding=DeviceBinding(device_id="s", address=ADDRESS),
        settings=BarcodeSettings(),
        open_device=missing,
    )
    with pytest.raises(DeviceUnavailableError, match="cannot open"):
        await driver.__aenter__()
    busy = FakeInputDevice(grab_error=OSError(errno.EBUSY, "Device or resource busy"))
    driver = hid_driver(busy)
    with pytest.raises(DeviceUnavailableError, match="cannot grab"):
        await driver.__aenter__()
    assert busy.closed
    await driver.__aexit__(None, None, None)  # idempotent after a failed open


async def test_hid_set_mode_turns_scans_into_receiving_events() -> None:
    device = FakeInputDevice()
    driver = hid_driver(device)
    readings: list[Reading] = []

    def command(name: str, **args: object) -> Command:
        return Command(
            command_id=uuid4(),
            store_id="store-1",
            gateway_id="gw-1",
            device_id="till-1-scanner",
            name=name,
            args=args,
            issued_at=T0,
        )

    async with driver:
        assert (await driver.execute(command("ping"))).detail == "pong"
        bad = await driver.execute(command("set_mode", mode="sale"))
        assert bad.status == "rejected"
        assert (await driver.execute(command("set_mode", mode="receiving"))).status == "done"
        task = asyncio.create_task(collect(driver, readings))
        device.push(typed("]E05901234123457"))

        async def one() -> bool:
            return len(readings) == 1

        await eventually(one, what="the scan")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert readings[0].kind == "scan.receiving"
    assert readings[0].payload["mode"] == "receiving"
