"""Simulated shelf controller firmware: N load cells speaking the Storegate shelf protocol on a pty.

Each slot holds whole items of one unit weight on an HX711-like cell: a raw 24-bit
count of ``zero + grams x sensitivity`` plus Gaussian noise, averaged over the filter
window, scaled by the firmware's own tare offset and calibration. The simulator sends a
``W`` line per sample period, answers ``RATE``, ``WIN``, ``TARE``, ``CAL`` and ``INFO``
as the firmware must (docs/devices/shelf.md), and lets tests and the demo act on the
shelf: customers pick and put (scripted, or at random with ``customers_per_minute``),
a hand rests on a slot for a moment, and faults are injected (garbage, broken
checksums, a stuck cell, overload, saturation, a disconnected cell, zero drift, unplug).
Every random choice comes from the ``rng`` it is given, so a seeded run repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from device_drivers.shelf.protocol import (
    CHECKSUM_MARK,
    COMMAND_NAMES,
    EOL,
    RAW_MAX,
    RAW_MIN,
    Ack,
    Calibrate,
    ControllerCommand,
    FrameError,
    HardwareCode,
    Info,
    InfoRequest,
    Message,
    SetRate,
    SetWindow,
    SlotError,
    SlotWeight,
    Tare,
    Weights,
    command_tag,
    encode_message,
    parse_command,
    unframe,
)
from device_drivers.simulated.pty import PtyPort

# An HX711 at gain 128 with a 2 mV/V cell of 5 kg on 4.3 V spans about 420 counts per gram.
COUNTS_PER_GRAM: Final = 420.0
ERROR_REPEAT_S: Final = 1.0  # the firmware repeats a slot's E line this often while the error lasts
# Calibrating on less than this (net counts) would divide noise by noise.
MIN_CALIBRATION_COUNTS: Final = 2000
_TOUCH_G: Final = (60.0, 250.0)  # a hand's weight on the shelf while it takes or places an item


@dataclass(frozen=True, slots=True)
class SlotSpec:
    """What one slot holds when the simulation starts."""

    unit_weight_g: float
    items: int = 0
    max_items: int | None = None  # random customers never fill the slot beyond this (None: no limit)


@dataclass(slots=True)
class _Hand:
    until: float
    grams: float
    tremor_g: float


@dataclass(slots=True)
class _Cell:
    """One slot's true load, its cell, and the firmware's view of it."""

    unit_weight_g: float
    items: int
    max_items: int | None
    zero_counts: int  # the raw value of the empty slot
    counts_per_g: float  # the cell's true sensitivity
    offset: float  # the firmware's tare: raw counts it calls zero
    scale: float  # the firmware's calibration: counts per gram
    history: deque[int]
    extra_g: float = 0.0  # something that is not an item (an overload)
    drift_g: float = 0.0  # the cell's zero creeping
    hands: list[_Hand] = field(default_factory=list)
    stuck_raw: int | None = None
    forced: HardwareCode | None = None  # a hardware error injected: DISC or SAT
    reported: HardwareCode = "NONE"  # the hardware state last sent in an E line
    last_error_at: float = 0.0
    last_raw: int = 0
    last_grams: float | None = None


class ShelfSimulator:
    """The firmware of a shelf controller on the master end of ``port``; ``await run()`` until cancelled."""

    def __init__(
        self,
        *,
        port: PtyPort,
        slots: Sequence[SlotSpec],
        rng: random.Random,
        noise_g: float = 0.5,
        rate_hz: int = 10,
        window: int = 4,
        serial: str = "SIM-SHELF-0001",
        firmware: str = "1.0.0-sim",
        customers_per_minute: float = 0.0,
    ) -> None:
        self.port = port
        self.rng = rng
        self.noise_g = noise_g
        self.rate_hz = rate_hz
        self.window = window
        self.serial = serial
        self.firmware = firmware
        self.customers_per_minute = customers_per_minute
        self.answering = True  # False: a controller that hears commands but never answers
        self.commands: list[ControllerCommand] = []
        self.lines_sent = 0
        self.seq = 0
        self._broken_pending = 0
        self._cells = [self._new_cell(spec) for spec in slots]

    def _new_cell(self, spec: SlotSpec) -> _Cell:
        zero = self.rng.randint(-200_000, 200_000)
        sensitivity = COUNTS_PER_GRAM * self.rng.uniform(0.95, 1.05)
        return _Cell(
            unit_weight_g=spec.unit_weight_g,
            items=spec.items,
            max_items=spec.max_items,
            zero_counts=zero,
            counts_per_g=sensitivity,
            offset=float(zero),  # shipped tared and calibrated
            scale=sensitivity,
            history=deque(maxlen=self.window),
        )

    def _cell(self, slot: int) -> _Cell:
        if not 1 <= slot <= len(self._cells):
            raise ValueError(f"slot {slot} is not one of 1..{len(self._cells)}")
        return self._cells[slot - 1]

    @property
    def slot_count(self) -> int:
        """How many slots (load cells) the controller has."""
        return len(self._cells)

    def items(self, slot: int) -> int:
        """How many items are on the slot now."""
        return self._cell(slot).items

    def reported_grams(self, slot: int) -> float | None:
        """The weight of the slot in the last W line (None during a hardware error)."""
        return self._cell(slot).last_grams

    # ------------------------------------------------------------------ what happens on the shelf

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _touch(self, cell: _Cell, seconds: float) -> None:
        if seconds > 0:
            cell.hands.append(_Hand(self._now() + seconds, self.rng.uniform(*_TOUCH_G), tremor_g=20.0))

    def pick(self, slot: int, n: int = 1, *, touch_s: float = 0.2) -> None:
        """A customer takes ``n`` items (their hand is on the shelf for ``touch_s`` while doing it)."""
        cell = self._cell(slot)
        if not 0 < n <= cell.items:
            raise ValueError(f"cannot pick {n} of the {cell.items} items on slot {slot}")
        cell.items -= n
        self._touch(cell, touch_s)

    def put(self, slot: int, n: int = 1, *, touch_s: float = 0.2) -> None:
        """Someone places ``n`` items on the slot."""
        if n <= 0:
            raise ValueError("put at least one item")
        cell = self._cell(slot)
        cell.items += n
        self._touch(cell, touch_s)

    def rest_hand(self, slot: int, grams: float, seconds: float, *, tremor_g: float = 12.0) -> None:
        """A hand leans on the slot with ``grams`` for ``seconds``, trembling by ``tremor_g`` (std dev)."""
        self._cell(slot).hands.append(_Hand(self._now() + seconds, grams, tremor_g))

    # ------------------------------------------------------------------ faults

    def stick(self, slot: int, stuck: bool = True) -> None:
        """Freeze (or thaw) the slot's ADC: the same raw value every sample, as a hung converter gives."""
        cell = self._cell(slot)
        cell.stuck_raw = cell.last_raw if stuck else None

    def overload(self, slot: int, grams: float) -> None:
        """Put a foreign load of ``grams`` on the slot (0 takes it off)."""
        self._cell(slot).extra_g = grams

    def saturate(self, slot: int, saturated: bool = True) -> None:
        """Drive the slot's ADC into saturation (the firmware reports SAT), or release it."""
        self._force(slot, "SAT" if saturated else None)

    def disconnect(self, slot: int, disconnected: bool = True) -> None:
        """Pull the slot's load cell off its connector (the firmware reports DISC), or plug it back."""
        self._force(slot, "DISC" if disconnected else None)

    def _force(self, slot: int, code: HardwareCode | None) -> None:
        cell = self._cell(slot)
        cell.forced = code
        if code is not None:
            cell.history.clear()  # the firmware knows at once: a TARE or CAL now is refused

    def drift(self, slot: int, grams: float) -> None:
        """Let the slot's zero creep by ``grams`` (negative: it reads lighter than it is)."""
        self._cell(slot).drift_g += grams

    def miscalibrate(self, slot: int, factor: float) -> None:
        """Make the firmware's scale wrong: it reports ``factor`` times the true weight until calibrated."""
        self._cell(slot).scale /= factor

    def break_checksums(self, lines: int = 1) -> None:
        """Send the next ``lines`` lines with a wrong checksum."""
        self._broken_pending += lines

    def inject_garbage(self, data: bytes | None = None) -> None:
        """Send ``data`` (default: 8-40 random bytes without '$', CR or LF) followed by CRLF: one garbage line."""
        if data is None:
            allowed = [b for b in range(256) if b not in b"$\r\n"]
            data = bytes(self.rng.choice(allowed) for _ in range(self.rng.randint(8, 40)))
        self._write(data + EOL)

    def unplug(self) -> None:
        """Pull the controller's USB cable: the driver's port fails and ``run()`` returns."""
        self.port.unplug()

    # ------------------------------------------------------------------ the firmware

    async def run(self) -> None:
        """Send the boot I line, then a W line per sample period and answer commands; returns when unplugged."""
        commands = asyncio.create_task(self._serve_commands(), name=f"shelf simulator {self.serial} commands")
        try:
            self._send(self._info())
            await self._sample_loop()
        except ConnectionError:
            pass  # unplugged
        finally:
            commands.cancel()
            await asyncio.gather(commands, return_exceptions=True)

    def _info(self) -> Info:
        return Info(
            firmware=self.firmware,
            serial=self.serial,
            slots=len(self._cells),
            rate_hz=self.rate_hz,
            window=self.window,
        )

    async def _sample_loop(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while self.port.plugged:
            now = loop.time()
            self._customers(now)
            self._send(Weights(seq=self.seq, slots=tuple(self._sample(cell, now) for cell in self._cells)))
            self.seq = (self.seq + 1) % 2**32
            for slot, cell in enumerate(self._cells, start=1):
                self._report_hardware(slot, cell, now)
            due = max(due + 1 / self.rate_hz, loop.time())
            await asyncio.sleep(due - loop.time())

    def _customers(self, now: float) -> None:
        if self.customers_per_minute <= 0:
            return
        if self.rng.random() >= self.customers_per_minute / 60 / self.rate_hz:
            return
        slot = self.rng.randint(1, len(self._cells))
        cell = self._cells[slot - 1]
        action = self.rng.random()
        if action < 0.15:
            self.rest_hand(slot, self.rng.uniform(100, 600), self.rng.uniform(0.3, 1.5))
        elif action < 0.7 and cell.items > 0:
            self.pick(slot, self.rng.randint(1, min(2, cell.items)))
        elif cell.max_items is None or cell.items < cell.max_items:
            room = 3 if cell.max_items is None else min(3, cell.max_items - cell.items)
            self.put(slot, self.rng.randint(1, room))

    def _sample(self, cell: _Cell, now: float) -> SlotWeight:
        cell.hands = [hand for hand in cell.hands if hand.until > now]
        load = cell.items * cell.unit_weight_g + cell.extra_g + cell.drift_g
        for hand in cell.hands:
            load += hand.grams + self.rng.gauss(0.0, hand.tremor_g)
        noise = self.rng.gauss(0.0, self.noise_g) if self.noise_g > 0 else 0.0
        raw = cell.zero_counts + round((load + noise) * cell.counts_per_g)
        if cell.stuck_raw is not None:
            raw = cell.stuck_raw
        cell.last_raw = raw
        if self._hardware_state(cell) != "NONE":
            cell.history.clear()  # the filter restarts when the cell works again
            cell.last_grams = None
            return SlotWeight(None, None)
        cell.history.append(raw)
        grams = round((sum(cell.history) / len(cell.history) - cell.offset) / cell.scale, 1)
        cell.last_grams = grams
        return SlotWeight(grams, raw)

    def _hardware_state(self, cell: _Cell) -> HardwareCode:
        if cell.forced is not None:
            return cell.forced
        return "SAT" if not RAW_MIN < cell.last_raw < RAW_MAX else "NONE"

    def _report_hardware(self, slot: int, cell: _Cell, now: float) -> None:
        state = self._hardware_state(cell)
        changed = state != cell.reported
        repeat = state != "NONE" and now - cell.last_error_at >= ERROR_REPEAT_S
        if changed or repeat:
            self._send(SlotError(slot=slot, code=state))
            cell.reported, cell.last_error_at = state, now

    # ------------------------------------------------------------------ commands

    async def _serve_commands(self) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                line = await self.port.read_line(terminator=b"\n")
                self._command_line(line.rstrip(b"\r"))

    def _command_line(self, line: bytes) -> None:
        try:
            fields = unframe(line)
        except FrameError:
            return  # a line that fails its checksum may carry a wrong tag: drop it, the gateway times out
        tag = command_tag(fields)
        try:
            command = parse_command(fields)
        except FrameError as err:
            name = fields[0].decode("ascii")
            if tag is not None and name.isalpha() and name.isupper() and len(name) <= 8 and self.answering:
                reason = "UNKNOWN_CMD" if err.reason == "unknown_type" else "BAD_ARG"
                self._send(Ack(tag=tag, command=name, ok=False, reason=reason))
            return
        self.commands.append(command)
        if not self.answering:
            return
        refusal = self._apply(command)
        if isinstance(command, InfoRequest):
            self._send(self._info())
        self._send(Ack(tag=command.tag, command=COMMAND_NAMES[type(command)], ok=refusal is None, reason=refusal))

    def _apply(self, command: ControllerCommand) -> str | None:
        """Carry out one command; the ERR reason, or None when done."""
        match command:
            case SetRate(hz=hz):
                self.rate_hz = hz
            case SetWindow(samples=samples):
                self.window = samples
                for cell in self._cells:
                    cell.history = deque(cell.history, maxlen=samples)
            case Tare(slot=slot) | Calibrate(slot=slot) if slot > len(self._cells):
                return "BAD_SLOT"
            case Tare(slot=slot) | Calibrate(slot=slot) if not self._cells[slot - 1].history:
                return "CELL_FAULT"
            case Tare(slot=slot):
                cell = self._cells[slot - 1]
                cell.offset = sum(cell.history) / len(cell.history)
            case Calibrate(slot=slot, grams=grams):
                cell = self._cells[slot - 1]
                net = sum(cell.history) / len(cell.history) - cell.offset
                if grams <= 0:
                    return "BAD_ARG"
                if abs(net) < MIN_CALIBRATION_COUNTS:
                    return "NO_LOAD"
                cell.scale = net / grams
            case InfoRequest():
                pass
        return None

    # ------------------------------------------------------------------ the line

    def _send(self, message: Message) -> None:
        line = encode_message(message)
        if self._broken_pending > 0:
            self._broken_pending -= 1
            body, _, crc = line[: -len(EOL)].rpartition(CHECKSUM_MARK)
            line = b"%s%s%04X%s" % (body, CHECKSUM_MARK, int(crc, 16) ^ 0x5A5A, EOL)
        self._write(line)
        self.lines_sent += 1

    def _write(self, data: bytes) -> None:
        self.port.write(data)  # raises ConnectionError once unplugged
