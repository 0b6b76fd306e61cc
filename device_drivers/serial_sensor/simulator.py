"""A simulated line sensor: prints one line per reading on a pty, from the real climate series.

The default line is the shipped ``diy-th-serial`` profile's, ``T=21.43;H=38.10*29`` CRLF
(the template's fields are ``temperature`` and ``humidity``; ``checksum`` appends the
NMEA-style ``*HH``). :meth:`emit` prints one line now (tests drive it directly);
:meth:`run` prints one every ``interval_s`` until cancelled. The driver opens :attr:`port`.

Faults: :attr:`silent` (prints nothing), :attr:`stuck` (the values stop changing),
:meth:`inject` (the next lines are garbage, carry a broken checksum or an impossible
value), ``fault_rate`` (random such faults) and :meth:`unplug` (the cable is pulled).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Iterator
from enum import StrEnum
from typing import Self

from device_drivers.serial_sensor.protocol import with_checksum
from device_drivers.simulated.climate import ClimateSample, climate_series
from device_drivers.simulated.pty import PtyPort


class Fault(StrEnum):
    """A fault the simulated sensor can put into its next lines."""

    GARBAGE = "garbage"  # line noise instead of a reading
    BAD_CHECKSUM = "bad-checksum"  # a reading whose checksum is wrong
    OUT_OF_RANGE = "out-of-range"  # a well-formed line with an impossible temperature (a broken probe)


class SerialSensorSimulator:
    """A sensor printing ``template`` lines; ``async with`` it, then :meth:`emit`, or run it as a task."""

    def __init__(
        self,
        *,
        template: str = "T={temperature:.2f};H={humidity:.2f}",
        checksum: bool = True,
        interval_s: float = 2.0,
        offset_c: float = 0.0,
        seed: int = 0,
        fault_rate: float = 0.0,
        samples: Iterator[ClimateSample] | None = None,
        terminator: bytes = b"\r\n",
    ) -> None:
        self.template = template
        self.checksum = checksum
        self.interval_s = interval_s
        self.terminator = terminator
        self.fault_rate = fault_rate
        self._samples = samples if samples is not None else climate_series(offset_c=offset_c, seed=seed)
        self._rng = random.Random(seed)
        self._pending: deque[Fault] = deque()
        self._sample = next(self._samples)
        self.silent = False
        self.stuck = False
        self.lines_sent = 0
        self.pty = PtyPort()

    @property
    def port(self) -> str:
        """The serial port the driver opens."""
        return self.pty.port

    @property
    def sample(self) -> ClimateSample:
        """The values of the last line printed (or about to be)."""
        return self._sample

    async def __aenter__(self) -> Self:
        self.pty.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.pty.unplug()

    async def run(self) -> None:
        """Print a line every ``interval_s`` until cancelled or unplugged (closing the port if it opened it)."""
        opened_here = not self.pty.plugged
        if opened_here:
            self.pty.open()
        try:
            while self.pty.plugged:
                self.emit()
                await asyncio.sleep(self.interval_s)
        finally:
            if opened_here:
                self.pty.unplug()

    def unplug(self) -> None:
        """Pull the cable: the driver's port reports EIO and disappears."""
        self.pty.unplug()

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Put ``fault`` into the next ``times`` lines."""
        self._pending.extend([fault] * times)

    def line(self, sample: ClimateSample) -> bytes:
        """The line this sensor prints for ``sample`` (without its terminator)."""
        payload = self.template.format(temperature=sample.temperature_c, humidity=sample.humidity_pct).encode()
        return with_checksum(payload) if self.checksum else payload

    def emit(self) -> bytes | None:
        """Print the next line now (nothing while silent); returns what was sent."""
        if self.silent:
            return None
        if not self.stuck:
            self._sample = next(self._samples)
        fault = self._pending.popleft() if self._pending else None
        if fault is None and self.fault_rate and self._rng.random() < self.fault_rate:
            fault = self._rng.choice(list(Fault))
        data = self._faulty(fault) if fault is not None else self.line(self._sample)
        self.pty.write(data + self.terminator)
        self.lines_sent += 1
        return data

    def _faulty(self, fault: Fault) -> bytes:
        good = self.line(self._sample)
        faults = {
            # Noise on the line: random bytes without line terminators, so it arrives as one line.
            Fault.GARBAGE: lambda: bytes(self._rng.choice(b"\x00\xff~#T=H;.0123456789*") for _ in range(12)),
            Fault.BAD_CHECKSUM: lambda: good[:-1] + (b"0" if good[-1:] != b"0" else b"1"),
            Fault.OUT_OF_RANGE: lambda: self.line(ClimateSample(temperature_c=-999.0, humidity_pct=50.0)),
        }
        return faults[fault]()
