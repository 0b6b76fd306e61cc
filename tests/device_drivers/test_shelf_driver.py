"""The shelf driver against the simulated controller firmware, through real pty pairs.

The profile is the shipped one with short windows (40 samples a second, a 0.3 s settle
window), so each test runs in about a second of real time. Waiting is always on a
condition with a deadline, never a bare sleep.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from device_drivers.base import (
    CommandNotSupportedError,
    DeviceUnavailableError,
    Driver,
    DriverError,
    DriverState,
    ProtocolError,
    Reading,
)
from device_drivers.ports import DeviceBinding
from device_drivers.profiles import create_driver, load_catalog, parse_settings
from device_drivers.shelf.driver import ShelfDriver
from device_drivers.shelf.profile import ShelfProfile, ShelfSettings
from device_drivers.shelf.protocol import InfoRequest, SetRate, SetWindow, frame
from device_drivers.shelf.simulator import ShelfSimulator, SlotSpec
from device_drivers.simulated.pty import PtyPort
from storegate.wire import PAYLOAD_MODELS, Command
from tests.conftest import eventually

PROFILE_ID = "storegate-shelf-v1"
SLOTS = [SlotSpec(250.0, 8), SlotSpec(400.0, 3), SlotSpec(100.0, 0), SlotSpec(500.0, 2), SlotSpec(100.0, 0)]
SETTINGS: dict[str, Any] = {
    "slots": {
        "1": {"sku": "COFFEE-250", "unit_weight_g": 250},
        "2": {"sku": "RICE-400", "unit_weight_g": 400},
        "3": {"sku": "TEA-100", "unit_weight_g": 100},
        "4": {"sku": "OIL-500", "unit_weight_g": 500},
        "5": {"sku": "SALT-100", "unit_weight_g": 100},
    },
    "stock_interval_s": 0.25,
}


def fast_profile(*, slots: int = len(SLOTS)) -> ShelfProfile:
    """The shipped profile, sped up for tests."""
    shipped = load_catalog().get(PROFILE_ID)
    assert isinstance(shipped, ShelfProfile)
    data = shipped.model_dump()
    data["shelf"]["slots"] = slots
    data["push"] = {"sample_rate_hz": 40, "filter_window": 2}
    data["calibration"].update(settle_window_s=0.3, stuck_s=0.5)
    data["timing"] = {"info_timeout_s": 0.5, "ack_timeout_s": 0.5, "silence_timeout_s": 1.0}
    return ShelfProfile.model_validate(data)


@dataclass
class Collected:
    """What ``readings()`` produced, and how it ended."""

    readings: list[Reading] = field(default_factory=list)
    error: BaseException | None = None
    ended: bool = False

    def of(self, *kinds: str) -> list[dict[str, Any]]:
        """Payloads of these kinds, in order."""
        return [dict(r.payload) for r in self.readings if r.kind in kinds]

    def stock(self, slot: int) -> list[dict[str, Any]]:
        """Stock payloads of one slot."""
        return [p for p in self.of("shelf.stock") if p["slot"] == slot]

    def faults(self, slot: int) -> list[str]:
        """The fault kinds reported for one slot, in order."""
        return [p["fault"] for p in self.of("shelf.fault") if p["slot"] == slot]


async def _collect(driver: ShelfDriver, into: Collected) -> None:
    try:
        async for reading in driver.readings():
            into.readings.append(reading)
    except DriverError as err:
        into.error = err
    into.ended = True


@dataclass
class Rig:
    """A simulator and an open driver on one pty, with everything the driver produced."""

    sim: ShelfSimulator
    driver: ShelfDriver
    got: Collected

    async def wait(self, probe: Callable[[], object], what: str, timeout: float = 5.0) -> None:
        """Wait for ``probe()`` to be truthy."""

        async def check() -> object:
            return probe()

        await eventually(check, timeout=timeout, interval=0.02, what=what)

    async def baseline(self) -> None:
        """Wait until every counted slot has reported stock once (its baseline is known)."""
        await self.wait(lambda: all(self.got.stock(slot) for slot in range(1, len(SLOTS) + 1)), "baseline stock")

    async def let_pass(self, seconds: float) -> None:
        """Let the controller send ``seconds`` worth of samples, and the driver judge every one of them."""
        target = self.sim.seq + round(seconds * self.sim.rate_hz)
        await self.wait(lambda: self.sim.seq >= target, f"{seconds} s of samples")
        # The ack of a ping comes after every line sent before it: once it is back, all were read.
        assert (await self.driver.execute(command("ping"))).status == "done"


def command(name: str, **args: Any) -> Command:
    """A hub command for the shelf."""
    return Command.model_validate(
        {
            "command_id": str(uuid.uuid4()),
            "store_id": "store-1",
            "gateway_id": "gw-1",
            "device_id": "shelf-a1",
            "name": name,
            "args": args,
            "issued_at": "2026-01-01T00:00:00Z",
        }
    )


@asynccontextmanager
async def rig(
    *,
    profile: ShelfProfile | None = None,
    before_open: Callable[[ShelfSimulator], None] | None = None,
    seed: int = 7,
    **sim_args: Any,
) -> AsyncIterator[Rig]:
    """A running simulator on a pty, and the driver opened on it with readings collected."""
    async with PtyPort() as port:
        sim = ShelfSimulator(port=port, slots=SLOTS, rng=random.Random(seed), **sim_args)
        if before_open is not None:
            before_open(sim)
        firmware = asyncio.create_task(sim.run())
        got = Collected()
        collector: asyncio.Task[None] | None = None
        try:
            driver = ShelfDriver(
                profile=profile or fast_profile(),
                binding=DeviceBinding(device_id="shelf-a1", address=port.port),
                settings=ShelfSettings.model_validate(SETTINGS),
            )
            async with driver:
                collector = asyncio.create_task(_collect(driver, got))
                yield Rig(sim=sim, driver=driver, got=got)
            for reading in got.readings:
                PAYLOAD_MODELS[reading.kind].model_validate(reading.payload)  # every payload fits the wire
                assert reading.device_id == "shelf-a1"
                assert reading.ts.tzinfo is not None
        finally:
            for task in (collector, firmware):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for t in (collector, firmware) if t is not None), return_exceptions=True)


async def test_open_pushes_the_profile_settings_and_verifies_the_acks() -> None:
    async with rig(rate_hz=10, window=8) as r:
        assert [type(c) for c in r.sim.commands] == [InfoRequest, SetRate, SetWindow]
        assert (r.sim.rate_hz, r.sim.window) == (40, 2)  # the controller now samples as the profile says
        info = r.driver.info
        assert info is not None
        assert (info.serial, info.slots, info.rate_hz, info.window) == ("SIM-SHELF-0001", 5, 40, 2)
        assert r.driver.health().state is DriverState.UP
        assert isinstance(r.driver, Driver)


async def test_a_controller_that_does_not_answer_info_is_unavailable() -> None:
    async with PtyPort() as port:
        sim = ShelfSimulator(port=port, slots=SLOTS, rng=random.Random(1))
        sim.answering = False
        firmware = asyncio.create_task(sim.run())
        driver = ShelfDriver(
            profile=fast_profile(), binding=DeviceBinding(device_id="s", address=port.port), settings=ShelfSettings()
        )
        try:
            with pytest.raises(DeviceUnavailableError, match=r"did not answer INFO within 0\.5 s"):
                await driver.__aenter__()
            assert driver.health().state is DriverState.DOWN
            assert sim.commands == [InfoRequest(tag=1)]  # it heard the question
        finally:
            await driver.__aexit__(None, None, None)
            firmware.cancel()
            await asyncio.gather(firmware, return_exceptions=True)


async def test_a_controller_with_other_slots_than_the_profile_is_refused() -> None:
    with pytest.raises(ProtocolError, match="the controller has 5 slots, profile 'storegate-shelf-v1' says 8"):
        async with rig(profile=fast_profile(slots=8)):
            pass


async def test_an_absent_port_is_unavailable() -> None:
    driver = ShelfDriver(
        profile=fast_profile(),
        binding=DeviceBinding(device_id="s", address="/dev/does-not-exist"),
        settings=ShelfSettings(),
    )
    with pytest.raises(DeviceUnavailableError):
        await driver.__aenter__()
    await driver.__aexit__(None, None, None)


async def test_a_pick_and_a_put_make_exactly_one_event_each() -> None:
    async with rig() as r:
        await r.baseline()
        assert r.got.stock(1)[-1] == {
            "slot": 1,
            "sku": "COFFEE-250",
            "count": 8,
            "weight_g": pytest.approx(2000, abs=2),
        }
        r.sim.pick(1, 2)
        r.sim.put(2, 1)
        await r.wait(lambda: r.got.of("shelf.pick") and r.got.of("shelf.put"), "the pick and the put")
        await r.let_pass(0.6)  # two settle windows: time for a duplicate to show, were there one
        assert r.got.of("shelf.pick") == [
            {"slot": 1, "sku": "COFFEE-250", "delta": -2, "count": 6, "weight_g": pytest.approx(1500, abs=2)}
        ]
        assert r.got.of("shelf.put") == [
            {"slot": 2, "sku": "RICE-400", "delta": 1, "count": 4, "weight_g": pytest.approx(1600, abs=2)}
        ]
        assert r.got.stock(1)[-1]["count"] == 6
        assert r.got.stock(2)[-1]["count"] == 4
        assert r.got.of("shelf.fault") == []


async def test_a_resting_hand_and_noise_make_no_events() -> None:
    async with rig(noise_g=0.8) as r:
        await r.baseline()
        r.sim.rest_hand(1, 300.0, 0.8)
        r.sim.rest_hand(2, 450.0, 1.0, tremor_g=8.0)  # 4.1 items' weight: a put, were it still
        r.sim.pick(4, 1, touch_s=0.0)
        r.sim.put(4, 1, touch_s=0.0)  # a pick and put-back within one sample period: nothing changed
        await r.let_pass(1.4)  # the hands, and a settle window after them
        assert r.got.of("shelf.pick", "shelf.put", "shelf.fault") == []
        counts = {(p["slot"], p["count"]) for p in r.got.of("shelf.stock")}
        assert counts == {(1, 8), (2, 3), (3, 0), (4, 2), (5, 0)}  # the stock was seen the whole time


async def test_tare_and_calibrate_round_trip() -> None:
    def wrong_scale(sim: ShelfSimulator) -> None:
        sim.miscalibrate(1, 1.06)  # slot 1 reads 2120 g for 2000 g: 8.48 items, which is no count

    async with rig(before_open=wrong_scale) as r:
        r.sim.drift(3, -60.0)  # slot 3 (empty) creeps to -60 g
        await r.wait(lambda: r.got.faults(3) == ["negative_drift"], "negative drift on slot 3")

        result = await r.driver.execute(command("tare", slot=3))
        assert (result.status, result.detail) == ("done", "slot 3 tared")
        await r.wait(lambda: r.got.faults(3) == ["negative_drift", "cleared"], "drift cleared by the tare")
        assert r.sim.reported_grams(3) == pytest.approx(0, abs=3)

        assert r.got.stock(1) == []  # 8.8 items: slot 1 has never been counted
        result = await r.driver.execute(command("calibrate", slot=1, known_weight_g=2000))
        assert (result.status, result.detail) == ("done", "slot 1 calibrated with 2000 g")
        await r.wait(lambda: abs((r.sim.reported_grams(1) or 0) - 2000) < 3, "slot 1 reporting 2000 g")
        await r.wait(lambda: any(p["count"] == 8 for p in r.got.stock(1)), "slot 1 counted after calibration")
        assert r.got.of("shelf.pick", "shelf.put") == []  # neither the tare nor the calibration is a pick or put

        refused = await r.driver.execute(command("calibrate", slot=5, known_weight_g=500))
        assert (refused.status, refused.detail) == ("failed", "the controller refused CAL of slot 5: NO_LOAD")
        r.sim.disconnect(4)
        refused = await r.driver.execute(command("tare", slot=4))
        assert (refused.status, refused.detail) == ("failed", "the controller refused TARE of slot 4: CELL_FAULT")

        for bad in (command("tare"), command("tare", slot=6), command("tare", slot=True),
                    command("calibrate", slot=1), command("calibrate", slot=1, known_weight_g=-5),
                    command("calibrate", slot=1, known_weight_g=99_999)):  # fmt: skip
            assert (await r.driver.execute(bad)).status == "rejected"


async def test_every_fault_is_detected_and_cleared() -> None:
    async with rig() as r:
        await r.baseline()
        r.sim.stick(1)
        r.sim.overload(2, 6000.0)
        r.sim.saturate(3)
        r.sim.disconnect(4)
        r.sim.drift(5, -60.0)
        expected = {1: "stuck", 2: "out_of_range", 3: "out_of_range", 4: "disconnected", 5: "negative_drift"}
        await r.wait(lambda: {s: r.got.faults(s)[:1] for s in expected} == {s: [f] for s, f in expected.items()},
                     "a fault on every slot")  # fmt: skip
        r.sim.put(4, 2)  # items put on a disconnected slot: no event, now or after it recovers
        await r.let_pass(0.4)

        r.sim.stick(1, False)
        r.sim.overload(2, 0.0)
        r.sim.saturate(3, False)
        r.sim.disconnect(4, False)
        r.sim.drift(5, 60.0)
        await r.wait(lambda: all(r.got.faults(s) == [f, "cleared"] for s, f in expected.items()), "every fault cleared")
        # Slot 4 re-baselines with the items put while it was off.
        await r.wait(lambda: r.got.stock(4)[-1]["count"] == 4, "slot 4 counted again")
        await r.let_pass(0.6)
        assert r.got.of("shelf.pick", "shelf.put") == []
        details = {p["slot"]: p["detail"] for p in r.got.of("shelf.fault") if p["fault"] != "cleared"}
        assert details[3] == "the controller reports the slot's ADC saturated"
        assert details[2].endswith("beyond the limit of 5500 g")


async def test_malformed_lines_are_counted_while_valid_lines_flow() -> None:
    async with rig() as r:
        await r.baseline()
        before = r.driver.rejected
        r.sim.break_checksums(5)
        r.sim.inject_garbage(b"\x00\x7fnoise on the line")
        r.sim.inject_garbage(b"junk" + frame("E,1,NONE")[:-2])  # garbage, then a valid line
        r.sim.inject_garbage(frame("Z,1,2")[:-2])
        r.sim.inject_garbage(frame("W,1,2,0.0,0,0.0,0")[:-2])  # a W of 2 slots from a 5-slot shelf
        r.sim.inject_garbage(frame("A,1,RATE")[:-2])
        r.sim.inject_garbage()  # random bytes
        r.sim.pick(1, 1)
        await r.wait(lambda: r.got.of("shelf.pick"), "a pick despite the noise")
        assert r.driver.rejected - before == {
            "bad_checksum": 5,
            "no_start": 2,  # the two noise lines
            "garbage": 1,
            "unknown_type": 1,
            "field_count": 2,
        }
        health = r.driver.health()
        assert health.state is DriverState.UP
        assert health.last_error is not None
        assert f"rejected {r.driver.rejected_total} malformed line(s)" in health.last_error
        assert r.got.of("shelf.pick")[0]["count"] == 7


async def test_unplugging_ends_readings_with_device_unavailable() -> None:
    async with rig() as r:
        await r.baseline()
        r.sim.unplug()
        await r.wait(lambda: r.got.ended, "readings() to end")
        assert isinstance(r.got.error, DeviceUnavailableError)
        assert r.driver.health().state is DriverState.DOWN
        with pytest.raises(DeviceUnavailableError):
            await r.driver.execute(command("ping"))
        with pytest.raises(DeviceUnavailableError):  # a second reader fails the same way
            async for _ in r.driver.readings():
                pass


async def test_a_silent_controller_ends_readings() -> None:
    async with rig() as r:
        await r.baseline()
        r.sim.answering = False
        r.sim.rate_hz = 1  # about to go quiet...
        r.sim.break_checksums(10_000)  # ...and what it still says is unreadable
        await r.wait(lambda: r.got.ended, "readings() to end on silence", timeout=6.0)
        assert isinstance(r.got.error, DeviceUnavailableError)
        assert "no valid line" in str(r.got.error)


async def test_ping_info_and_unknown_commands() -> None:
    async with rig() as r:
        pong = await r.driver.execute(command("ping"))
        assert (pong.status, pong.detail) == ("done", "pong from SIM-SHELF-0001 (1.0.0-sim)")
        info = await r.driver.execute(command("info"))
        assert info.status == "done"
        assert json.loads(info.detail) | {"rejected_lines": 0, "samples_missed": 0} == {
            "firmware": "1.0.0-sim",
            "serial": "SIM-SHELF-0001",
            "slots": 5,
            "sample_rate_hz": 40,
            "filter_window": 2,
            "rejected_lines": 0,
            "samples_missed": 0,
        }
        with pytest.raises(CommandNotSupportedError):
            await r.driver.execute(command("print"))
        r.sim.answering = False
        silent = await r.driver.execute(command("ping"))
        assert (silent.status, silent.detail) == ("failed", "no answer to INFO within 0.5 s")


async def test_the_agent_creates_the_driver_from_the_catalog() -> None:
    profile = load_catalog().get(PROFILE_ID)
    settings = parse_settings(profile, SETTINGS)
    driver = create_driver(profile, DeviceBinding(device_id="shelf-a1", address="/dev/ttyACM9"), settings)
    assert isinstance(driver, ShelfDriver)
    assert driver.health().state is DriverState.CLOSED
