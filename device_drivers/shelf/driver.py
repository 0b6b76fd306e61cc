"""The smart shelf driver: the Storegate shelf controller on a serial port, as pick, put, stock and fault events.

On open the driver asks the controller who it is (``INFO``; no answer within
``timing.info_timeout_s`` is a :class:`DeviceUnavailableError`), checks its slot count
against the profile, and pushes the profile's ``[push]`` settings (``RATE``, ``WIN``),
verifying each ack. One reader task then parses every line: weights feed one
:class:`~device_drivers.shelf.settle.SlotTracker` per slot, acks complete the command
waiting for them, and malformed lines are counted and skipped. ``readings()`` yields:

* ``shelf.pick`` / ``shelf.put`` (:class:`~storegate.wire.ShelfChange`) when a slot's settled count changes,
* ``shelf.stock`` (:class:`~storegate.wire.ShelfStock`) for each counted slot every ``stock_interval_s``,
* ``shelf.fault`` (:class:`~storegate.wire.ShelfFault`) when a cell becomes untrustworthy, and ``cleared`` after.

It ends (raises :class:`DeviceUnavailableError`) when the port goes away or the
controller stays silent for ``timing.silence_timeout_s``; the supervisor reopens it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Final, Self

import structlog

from device_drivers.base import (
    CommandNotSupportedError,
    DeviceUnavailableError,
    DriverHealth,
    DriverState,
    ProtocolError,
    Reading,
)
from device_drivers.ports import DeviceBinding
from device_drivers.shelf.profile import ShelfProfile, ShelfSettings
from device_drivers.shelf.protocol import (
    COMMAND_NAMES,
    MAX_LINE,
    MAX_TAG,
    SEQ_MODULUS,
    Ack,
    Calibrate,
    ControllerCommand,
    FrameError,
    Info,
    InfoRequest,
    LineDecoder,
    Message,
    SetRate,
    SetWindow,
    SlotError,
    Tare,
    Weights,
    encode_command,
)
from device_drivers.shelf.settle import (
    CountChange,
    FaultCleared,
    FaultRaised,
    Sample,
    SlotConfig,
    SlotEvent,
    SlotTracker,
)
from device_drivers.toolkit.commands import ResultStatus, command_result
from device_drivers.toolkit.health import HealthRecord
from device_drivers.toolkit.rejects import RejectCounter
from device_drivers.toolkit.serialio import LineTooLongError, SerialTransport
from storegate.clock import SYSTEM_CLOCK, Clock
from storegate.logs import worth_logging
from storegate.wire import Command, CommandResult, EventKind, ShelfChange, ShelfFault, ShelfStock, WireModel

log = structlog.get_logger(__name__)

# Readings waiting for the agent, at most (a few hours of stock reports of a full shelf).
_MAX_QUEUED: Final = 10_000


def create(*, profile: ShelfProfile, binding: DeviceBinding, settings: ShelfSettings) -> ShelfDriver:
    """The driver for one shelf controller (called by ``device_drivers.profiles.create_driver``)."""
    return ShelfDriver(profile=profile, binding=binding, settings=settings)


class ShelfDriver:
    """One shelf controller behind the Driver interface; ``clock`` times settling and stamps the readings."""

    def __init__(
        self,
        *,
        profile: ShelfProfile,
        binding: DeviceBinding,
        settings: ShelfSettings,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.profile = profile
        self.binding = binding
        self.settings = settings
        self._clock = clock
        self.record = HealthRecord()
        # Never ended by a valid line (``accepted``): at 10 to 80 lines a second, every isolated reject would
        # be the 1st of a run, so the 1st, 10th, 100th... of the driver's life are logged instead.
        self.rejects = RejectCounter(
            logger=log,
            device_id=binding.device_id,
            health=self.record,
            event="shelf line rejected",
            noun="malformed line(s)",
        )
        # Kept across reopens: its counters are the device's lifetime totals.
        self._decoder = LineDecoder(on_reject=lambda error: self.rejects.reject(error.reason, error.detail))
        self._failure: DeviceUnavailableError | None = None
        self._transport: SerialTransport | None = None
        self._reader: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Reading | DeviceUnavailableError | None] | None = None
        self._pending: dict[int, asyncio.Future[Ack]] = {}
        self._command_lock = asyncio.Lock()
        self._tag = 0
        self._info: Info | None = None
        self._trackers: dict[int, SlotTracker] = {}
        self._next_stock = 0.0
        self._last_valid = 0.0
        self._last_seq: int | None = None
        self.dropped_total = 0
        self.samples_missed = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self.record.state in (DriverState.OPENING, DriverState.UP):
            raise RuntimeError(f"{self.binding.device_id} is already open")
        self.record.opening()
        self._failure = None
        self._trackers = {}
        self._queue = asyncio.Queue(maxsize=_MAX_QUEUED)
        transport = SerialTransport(url=self.binding.address, link=self.profile.serial, max_line=MAX_LINE)
        try:
            await transport.__aenter__()
            self._transport = transport
            self._last_valid = self._clock.monotonic()
            self._reader = asyncio.create_task(self._read_loop(transport), name=f"shelf {self.binding.device_id}")
            await self._attach()
        except BaseException as err:
            await self._close()
            self.record.down(err)
            raise
        self.record.up()
        info = self._info
        assert info is not None
        log.info(
            "shelf attached",
            device_id=self.binding.device_id,
            address=self.binding.address,
            firmware=info.firmware,
            serial=info.serial,
            slots=info.slots,
            rate_hz=self.profile.push.sample_rate_hz,
            window=self.profile.push.filter_window,
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()
        self.record.closed()

    async def _close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()
        self._fail_pending(DeviceUnavailableError(f"{self.binding.device_id} was closed"))
        if self._queue is not None:
            self._queue.put_nowait(None)

    async def _attach(self) -> None:
        """Ask who the controller is, check it fits the profile, push the profile's settings."""
        timing, push = self.profile.timing, self.profile.push
        self._info = None
        ack = await self._ask(InfoRequest, timeout=timing.info_timeout_s, what="INFO")
        info = self._info
        if not ack.ok or info is None:
            raise ProtocolError(f"{self.binding.address}: INFO was not answered with an I line ({ack})")
        if info.slots != self.profile.shelf.slots:
            raise ProtocolError(
                f"{self.binding.address}: the controller has {info.slots} slots, "
                f"profile {self.profile.id!r} says {self.profile.shelf.slots}"
            )
        pushes: tuple[tuple[Callable[[int], ControllerCommand], str], ...] = (
            (lambda tag: SetRate(tag=tag, hz=push.sample_rate_hz), f"RATE {push.sample_rate_hz}"),
            (lambda tag: SetWindow(tag=tag, samples=push.filter_window), f"WIN {push.filter_window}"),
        )
        for build, what in pushes:
            ack = await self._ask(build, timeout=timing.ack_timeout_s, what=what)
            if not ack.ok:
                raise ProtocolError(f"{self.binding.address}: the controller refused {what}: {ack.reason}")
        self._info = dataclasses.replace(info, rate_hz=push.sample_rate_hz, window=push.filter_window)
        unknown = sorted(slot for slot in self.settings.slots if slot > info.slots)
        if unknown:
            log.warning(
                "shelf settings name slots the controller does not have",
                device_id=self.binding.device_id,
                slots=unknown,
                controller_slots=info.slots,
            )
        self._trackers = {slot: SlotTracker(config=self._slot_config(slot)) for slot in range(1, info.slots + 1)}
        self._next_stock = self._clock.monotonic() + self.settings.stock_interval_s
        self._last_seq = None

    def _slot_config(self, slot: int) -> SlotConfig:
        calibration, settings = self.profile.calibration, self.settings
        assignment = settings.slots.get(slot)
        return SlotConfig(
            unit_weight_g=None if assignment is None else assignment.unit_weight_g,
            settle_window_s=settings.settle_window_s or calibration.settle_window_s,
            settle_tolerance_g=settings.settle_tolerance_g or calibration.settle_tolerance_g,
            count_tolerance=calibration.count_tolerance,
            stuck_s=calibration.stuck_s,
            negative_drift_g=calibration.negative_drift_g,
            out_of_range_g=calibration.out_of_range_g,
        )

    # ------------------------------------------------------------------ commands to the controller

    async def _ask(self, build: Callable[[int], ControllerCommand], *, timeout: float, what: str) -> Ack:
        """Send one command and wait for its ack; no ack in time is DeviceUnavailableError."""
        try:
            return await self._send(build, timeout=timeout)
        except TimeoutError as err:
            raise DeviceUnavailableError(
                f"{self.binding.address}: the shelf controller did not answer {what} within {timeout:g} s"
            ) from err

    async def _send(self, build: Callable[[int], ControllerCommand], *, timeout: float) -> Ack:
        """Send one command, one at a time, and wait for the ack with its tag; raises TimeoutError."""
        async with self._command_lock:
            transport = self._transport
            if self._failure is not None:
                raise self._failure
            if transport is None:
                raise DeviceUnavailableError(f"{self.binding.device_id} is not open")
            self._tag = (self._tag + 1) % (MAX_TAG + 1)
            command = build(self._tag)
            future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
            self._pending[command.tag] = future
            try:
                await transport.write(encode_command(command))
                async with asyncio.timeout(timeout):  # not wait_for: see device_drivers.toolkit.serialio
                    ack = await future
            finally:
                self._pending.pop(command.tag, None)
        expected = COMMAND_NAMES[type(command)]
        if ack.command != expected:
            raise ProtocolError(f"the ack of {expected} tag {command.tag} names {ack.command}")
        return ack

    def _fail_pending(self, error: DeviceUnavailableError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    # ------------------------------------------------------------------ reading lines

    async def _read_loop(self, transport: SerialTransport) -> None:
        silence = self.profile.timing.silence_timeout_s
        try:
            while True:
                remaining = self._last_valid + silence - self._clock.monotonic()
                if remaining <= 0:
                    raise DeviceUnavailableError(
                        f"{self.binding.address}: no valid line from the shelf controller for {silence:g} s"
                    )
                try:
                    line = await transport.read_line(timeout=remaining)
                except LineTooLongError as err:
                    self._decoder.reject(FrameError("too_long", str(err)))
                    continue
                except TimeoutError:
                    continue  # the loop's head decides whether the silence is long enough
                message = self._decoder.decode(line)
                if message is not None:
                    self._last_valid = self._clock.monotonic()
                    self._handle(message)
        except DeviceUnavailableError as err:
            self._went_away(err)

    def _went_away(self, error: DeviceUnavailableError) -> None:
        if self.record.is_up:
            log.warning("shelf controller went away", device_id=self.binding.device_id, error=str(error))
        self.record.down(error)
        self._failure = error
        self._fail_pending(error)
        if self._queue is not None:
            self._queue.put_nowait(error)

    def _handle(self, message: Message) -> None:
        match message:
            case Ack(tag=tag):
                future = self._pending.get(tag)
                if future is not None and not future.done():
                    future.set_result(message)
            case Info():
                self._info = message
            case Weights():
                self._on_weights(message)
            case SlotError(slot=slot, code=code):
                tracker = self._trackers.get(slot)
                if tracker is not None:
                    self._emit(slot, tracker.hardware_error(code))

    def _on_weights(self, weights: Weights) -> None:
        if not self._trackers:
            return  # before the push is acked: weights at the old rate and window are not judged
        if len(weights.slots) != len(self._trackers):
            self._decoder.reject(
                FrameError("field_count", f"W with {len(weights.slots)} slots from a {len(self._trackers)}")
            )
            return
        if self._last_seq is not None:
            self.samples_missed += (weights.seq - self._last_seq - 1) % SEQ_MODULUS
        self._last_seq = weights.seq
        now = self._clock.monotonic()
        for slot, value in enumerate(weights.slots, start=1):
            self._emit(slot, self._trackers[slot].observe(Sample(t=now, grams=value.grams, raw=value.raw)))
        if now >= self._next_stock:
            # A consumer far behind gets one report now, not a burst of missed ones.
            self._next_stock = max(self._next_stock + self.settings.stock_interval_s, now)
            self._report_stock()

    def _sku(self, slot: int) -> str | None:
        assignment = self.settings.slots.get(slot)
        return None if assignment is None else assignment.sku

    def _emit(self, slot: int, events: list[SlotEvent]) -> None:
        for event in events:
            match event:
                case CountChange(delta=delta, count=count, weight_g=weight):
                    kind = EventKind.SHELF_PUT if delta > 0 else EventKind.SHELF_PICK
                    change = ShelfChange(slot=slot, sku=self._sku(slot), delta=delta, count=count, weight_g=weight)
                    self._put(kind, change)
                case FaultRaised(fault=fault, detail=detail):
                    log.warning(
                        "shelf slot faulty", device_id=self.binding.device_id, slot=slot, fault=fault, detail=detail
                    )
                    self._put(EventKind.SHELF_FAULT, ShelfFault(slot=slot, fault=fault, detail=detail))
                case FaultCleared(detail=detail):
                    log.info("shelf slot recovered", device_id=self.binding.device_id, slot=slot, detail=detail)
                    self._put(EventKind.SHELF_FAULT, ShelfFault(slot=slot, fault="cleared", detail=detail))

    def _report_stock(self) -> None:
        for slot, tracker in self._trackers.items():
            stock = tracker.stock()
            if stock is None:
                continue  # not settled yet (a slot without a unit weight reports its weight, no count)
            count, weight = stock
            self._put(EventKind.SHELF_STOCK, ShelfStock(slot=slot, sku=self._sku(slot), count=count, weight_g=weight))

    def _put(self, kind: str, payload: WireModel) -> None:
        ts = self._clock.now()
        self.record.read(ts)
        if self._queue is None:
            return
        body = payload.model_dump(mode="json", exclude_none=True)
        reading = Reading(device_id=self.binding.device_id, kind=kind, ts=ts, payload=body)
        try:
            self._queue.put_nowait(reading)
        except asyncio.QueueFull:
            # Only when the agent has taken nothing for a long time (its outbox cannot write): bounded
            # memory first; the loss is counted and logged, and stock levels are reported again later.
            self.dropped_total += 1
            if worth_logging(self.dropped_total):
                log.error("shelf_readings_dropped", device_id=self.binding.device_id, dropped=self.dropped_total)

    # ------------------------------------------------------------------ the Driver interface

    async def readings(self) -> AsyncIterator[Reading]:
        """Pick, put, stock and fault readings; raises DeviceUnavailableError when the controller goes away."""
        queue = self._queue
        if queue is None or self.record.state is DriverState.CLOSED:
            raise DeviceUnavailableError(f"{self.binding.device_id} is not open")
        while True:
            item = await queue.get()
            if item is None:
                queue.put_nowait(None)
                return
            if isinstance(item, DeviceUnavailableError):
                queue.put_nowait(item)  # every later read fails the same way
                raise item
            yield item

    async def execute(self, command: Command) -> CommandResult:
        """``ping``, ``info``, ``tare`` (``slot``) and ``calibrate`` (``slot``, ``known_weight_g``)."""
        handler = _COMMANDS.get(command.name)
        if handler is None:
            raise CommandNotSupportedError(f"{self.binding.device_id} does not support command {command.name!r}")
        return await handler(self, command)

    def health(self) -> DriverHealth:
        """State, last error (a reject with the count of rejected lines) and last reading, without I/O."""
        return self.record.snapshot()

    @property
    def rejected_total(self) -> int:
        """Malformed lines counted and skipped since the driver was made."""
        return self.rejects.total

    @property
    def rejected(self) -> Counter[str]:
        """Rejected lines by reason (``bad_checksum``, ``garbage``, ``field_count``...)."""
        return Counter(self.rejects.by_reason)

    @property
    def info(self) -> Info | None:
        """What the controller said about itself on the last INFO."""
        return self._info

    def tracker(self, slot: int) -> SlotTracker:
        """The settle/count/fault state of one slot (for diagnostics and tests)."""
        return self._trackers[slot]

    # ------------------------------------------------------------------ hub commands

    def _result(self, command: Command, status: ResultStatus, detail: str) -> CommandResult:
        return command_result(command, status, detail, now=self._clock.now())

    async def _round_trip(
        self, command: Command, build: Callable[[int], ControllerCommand], what: str
    ) -> tuple[Ack | None, CommandResult | None]:
        """Send and wait for the ack; a missing or refused ack is already a failed result."""
        timeout = self.profile.timing.ack_timeout_s
        try:
            ack = await self._send(build, timeout=timeout)
        except TimeoutError:
            return None, self._result(command, "failed", f"no answer to {what} within {timeout:g} s")
        if not ack.ok:
            return ack, self._result(command, "failed", f"the controller refused {what}: {ack.reason}")
        return ack, None

    async def _fresh_info(self, command: Command) -> Info | CommandResult:
        """A new I line from the controller, or the failed result (the last known info is kept then)."""
        previous, self._info = self._info, None
        _, failed = await self._round_trip(command, InfoRequest, "INFO")
        info = self._info
        if failed is not None or info is None:
            self._info = previous
            return failed or self._result(command, "failed", "the controller acked INFO without an I line")
        return info

    async def _ping(self, command: Command) -> CommandResult:
        info = await self._fresh_info(command)
        if isinstance(info, CommandResult):
            return info
        return self._result(command, "done", f"pong from {info.serial} ({info.firmware})")

    async def _info_command(self, command: Command) -> CommandResult:
        info = await self._fresh_info(command)
        if isinstance(info, CommandResult):
            return info
        detail = {
            "firmware": info.firmware,
            "serial": info.serial,
            "slots": info.slots,
            "sample_rate_hz": info.rate_hz,
            "filter_window": info.window,
            "rejected_lines": self.rejects.total,
            "samples_missed": self.samples_missed,
        }
        return self._result(command, "done", json.dumps(detail, sort_keys=True))

    def _slot_arg(self, command: Command) -> int | str:
        """The ``slot`` argument, or why it is not one."""
        slot = command.args.get("slot")
        if not isinstance(slot, int) or isinstance(slot, bool) or slot not in self._trackers:
            return f"args.slot must be a slot number from 1 to {len(self._trackers)}, got {slot!r}"
        return slot

    async def _tare(self, command: Command) -> CommandResult:
        slot = self._slot_arg(command)
        if isinstance(slot, str):
            return self._result(command, "rejected", slot)
        _, failed = await self._round_trip(command, lambda tag: Tare(tag=tag, slot=slot), f"TARE of slot {slot}")
        if failed is not None:
            return failed
        self._trackers[slot].rebaseline()  # the zero moved: the next settled count is a new baseline, not a put
        return self._result(command, "done", f"slot {slot} tared")

    async def _calibrate(self, command: Command) -> CommandResult:
        slot = self._slot_arg(command)
        if isinstance(slot, str):
            return self._result(command, "rejected", slot)
        known = command.args.get("known_weight_g")
        capacity = self.profile.shelf.capacity_g
        if not isinstance(known, int | float) or isinstance(known, bool) or not 0 < known <= capacity:
            return self._result(command, "rejected", f"args.known_weight_g must be in (0, {capacity:g}], got {known!r}")
        grams = float(known)
        _, failed = await self._round_trip(
            command, lambda tag: Calibrate(tag=tag, slot=slot, grams=grams), f"CAL of slot {slot}"
        )
        if failed is not None:
            return failed
        self._trackers[slot].rebaseline()
        return self._result(command, "done", f"slot {slot} calibrated with {grams:g} g")


# Each hub command and its handler: adding a command is one line here.
_COMMANDS: Final[dict[str, Callable[[ShelfDriver, Command], Awaitable[CommandResult]]]] = {
    "ping": ShelfDriver._ping,
    "info": ShelfDriver._info_command,
    "tare": ShelfDriver._tare,
    "calibrate": ShelfDriver._calibrate,
}
