"""Simulated 1-Wire probes: ``w1_slave`` files in a sysfs-like tree, from the real climate series.

The tree looks like ``/sys/bus/w1/devices``: a ``w1_bus_master1`` directory and one
``28-xxxxxxxxxxxx`` directory per probe holding ``w1_slave``. Each :meth:`OneWireSimulator.step`
writes the next minute of the recorded climate (offset per probe, a chiller is ~-18 Cel from a
room) at the DS18B20's 1/16 Cel resolution. Files are replaced atomically, so a reader never sees
half a file. Faults: a failed CRC (``NO``), the 85000 power-on value, all-zero scratchpad, a
stuck value, and unplugging (the directory vanishes, as the kernel removes a lost probe).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from device_drivers.onewire.protocol import POWER_ON_RESET_MILLI, format_w1_slave, scratchpad_for
from device_drivers.simulated.climate import ClimateSample, climate_series

Fault = Literal["crc", "power_on_reset", "no_data"]
_BUS_MASTER: Final = "w1_bus_master1"


def _faulty_text(fault: Fault, temperature_c: float) -> str:
    pad = bytearray(scratchpad_for(temperature_c))
    if fault == "crc":
        pad[1] ^= 0x04  # a flipped bit on the wire: the kernel's CRC check fails
    elif fault == "power_on_reset":
        pad = bytearray(scratchpad_for(POWER_ON_RESET_MILLI / 1000))
    else:
        pad = bytearray(9)
    return format_w1_slave(bytes(pad))


@dataclass
class SimulatedProbe:
    """One probe: its name, the series it follows and the faults queued for its next writes."""

    name: str
    series: Iterator[ClimateSample]
    faults: list[Fault] = field(default_factory=list)
    stuck: bool = False
    plugged: bool = True
    last_c: float | None = None


class OneWireSimulator:
    """A sysfs-like tree of simulated DS18B20 probes under ``root``."""

    def __init__(self, *, root: Path, interval_s: float = 1.0) -> None:
        self.root = root
        self.interval_s = interval_s
        self.probes: dict[str, SimulatedProbe] = {}
        (root / _BUS_MASTER).mkdir(parents=True, exist_ok=True)

    def add_probe(
        self, *, serial: str = "0316a279b0ff", family: str = "28", offset_c: float = 0.0, seed: int = 0
    ) -> Path:
        """Plug in a probe and write its first sample; returns its directory (the driver's address)."""
        name = f"{family}-{serial}"
        self.probes[name] = SimulatedProbe(name=name, series=climate_series(offset_c=offset_c, seed=seed))
        self._write(self.probes[name])
        return self.root / name

    def inject(self, name: str, *faults: Fault) -> None:
        """Make the next writes of probe ``name`` these faults, in order."""
        self.probes[name].faults.extend(faults)

    def stick(self, name: str, stuck: bool = True) -> None:
        """Keep writing the probe's last value (a stuck sensor), or let it move again."""
        self.probes[name].stuck = stuck

    def unplug(self, name: str) -> None:
        """Remove the probe's directory, as the kernel does once its bus search misses the probe."""
        self.probes[name].plugged = False
        shutil.rmtree(self.root / name, ignore_errors=True)

    def replug(self, name: str) -> None:
        """Bring the probe back."""
        self.probes[name].plugged = True
        self._write(self.probes[name])

    def step(self) -> None:
        """Write the next sample (or queued fault) of every plugged-in probe."""
        for probe in self.probes.values():
            if probe.plugged:
                self._write(probe)

    def _write(self, probe: SimulatedProbe) -> None:
        if not probe.stuck or probe.last_c is None:
            probe.last_c = next(probe.series).temperature_c
        if probe.faults:
            text = _faulty_text(probe.faults.pop(0), probe.last_c)
        else:
            text = format_w1_slave(scratchpad_for(probe.last_c))
        directory = self.root / probe.name
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / ".w1_slave.tmp"
        tmp.write_text(text, encoding="ascii")
        os.replace(tmp, directory / "w1_slave")

    async def run(self) -> None:
        """Write a new sample every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            self.step()
