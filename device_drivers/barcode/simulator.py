"""A simulated serial barcode scanner on a pty, and real shop baskets to scan with it.

:class:`SimulatedSerialScanner` plays a scanner in USB CDC / RS-232 mode: each code goes
out as its AIM identifier (when programmed to send one), the data, and the suffix. Tests
and the demo queue scans; faults can be injected: garbage bytes, a code with a broken
check digit, and a code cut off by pulling the cable.

:class:`BasketReplayer` turns the invoices of the UCI Online Retail data (two real days,
``retail/onlineretail_2010-12-01_to_02.csv`` in the shared data folder) into checkout
scans: each product line's stock code scanned as Code 128 (``]C0``), once per unit up to
``max_units_per_line``, with the same item's repeats spaced beyond the double-read window.
Cancelled invoices (``C...``), returns (negative quantities) and non-product lines
(postage ``POST``, ``DOT``, manual ``M``, bank charges...) are skipped: nobody scans them.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Final

from device_drivers.barcode.profile import TERMINATOR_BYTES, Terminator
from device_drivers.simulated.climate import shared_data_dir
from device_drivers.simulated.pty import PtyPort

RETAIL_FILE: Final = Path("retail") / "onlineretail_2010-12-01_to_02.csv"
_PRODUCT_CODE: Final = re.compile(r"^\d{5}[A-Za-z]{0,2}$")  # the data's product stock codes: 85123A, 71053


@dataclass(frozen=True, slots=True)
class PlannedScan:
    """One scan to make after waiting ``delay_s``."""

    code: str
    aim: str | None = "]C0"
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class _Write:
    data: bytes
    unplug_after: bool = False


class SimulatedSerialScanner:
    """Scanner firmware on the master end of a :class:`PtyPort`; the driver opens ``port.port``."""

    def __init__(
        self,
        *,
        port: PtyPort,
        terminator: Terminator = "cr",
        aim_ids: bool = True,
        encoding: str = "latin-1",
        source: Iterator[PlannedScan] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        unplug_delay_s: float = 0.2,
    ) -> None:
        self.port = port
        self.terminator = TERMINATOR_BYTES[terminator]
        self.aim_ids = aim_ids
        self.encoding = encoding
        self._source = source
        self._sleep = sleep
        self.unplug_delay_s = unplug_delay_s  # bytes sent before a pulled cable still reach the host
        self._queue: asyncio.Queue[_Write] = asyncio.Queue()
        self.sent_total = 0

    def frame(self, code: str, *, aim: str | None) -> bytes:
        """The bytes the scanner sends for one code."""
        prefix = aim if self.aim_ids and aim else ""
        return (prefix + code).encode(self.encoding) + self.terminator

    def queue_scan(self, code: str, *, aim: str | None = None) -> None:
        """Scan ``code`` (``aim``: its AIM identifier, sent when the scanner is programmed to)."""
        self._queue.put_nowait(_Write(self.frame(code, aim=aim)))

    def queue_garbage(self, data: bytes = b"\x00\xff\x13#!~\x7f") -> None:
        """Line noise ending in the terminator, as a wrong baud rate or a bad cable gives."""
        self._queue.put_nowait(_Write(data + self.terminator))

    def queue_broken_check_digit(self, code: str, *, aim: str | None = None) -> None:
        """``code`` with its last (check) digit changed, as a misprinted or damaged label reads."""
        broken = code[:-1] + str((int(code[-1]) + 1) % 10)
        self.queue_scan(broken, aim=aim)

    def queue_partial(self, code: str, *, aim: str | None = None, keep: int | None = None) -> bytes:
        """Send the first ``keep`` bytes of the code's frame (default half) and no terminator; returns them."""
        frame = self.frame(code, aim=aim)[: -len(self.terminator)]
        partial = frame[: len(frame) // 2 if keep is None else keep]
        self._queue.put_nowait(_Write(partial))
        return partial

    def queue_unplug(self) -> None:
        """Pull the cable ``unplug_delay_s`` after the writes queued before (ends :meth:`run`)."""
        self._queue.put_nowait(_Write(b"", unplug_after=True))

    def queue_cut_off(self, code: str, *, aim: str | None = None, keep: int | None = None) -> None:
        """A code cut off by pulling the cable mid-scan: :meth:`queue_partial`, then :meth:`queue_unplug`."""
        self.queue_partial(code, aim=aim, keep=keep)
        self.queue_unplug()

    def unplug(self) -> None:
        """Pull the cable now."""
        self.port.unplug()

    async def run(self) -> None:
        """Send queued scans (and the source's, paced) until cancelled or unplugged."""
        tasks = [asyncio.create_task(self._drain())]
        if self._source is not None:
            tasks.append(asyncio.create_task(self._replay(self._source)))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                write = await self._queue.get()
                if write.data:
                    self.port.write(write.data)
                    self.sent_total += 1
                if write.unplug_after:
                    await self._sleep(self.unplug_delay_s)
                    self.port.unplug()
                    return

    async def _replay(self, source: Iterator[PlannedScan]) -> None:
        for planned in source:
            await self._sleep(planned.delay_s)
            self.queue_scan(planned.code, aim=planned.aim)
        await asyncio.Event().wait()  # the source ran dry: the scanner stays plugged in, idle


@dataclass(frozen=True, slots=True)
class BasketLine:
    """One product line of an invoice."""

    stock_code: str
    quantity: int
    description: str


@dataclass(frozen=True, slots=True)
class Basket:
    """One real invoice: what one customer bought."""

    invoice: str
    lines: tuple[BasketLine, ...]


def retail_path() -> Path:
    """The shared retail data file; FileNotFoundError naming it when it is missing."""
    folder = shared_data_dir()
    if folder is None or not (folder / RETAIL_FILE).is_file():
        raise FileNotFoundError(f"shared data file {RETAIL_FILE} not found (set STOREGATE_SHARED_DATA)")
    return folder / RETAIL_FILE


class BasketReplayer:
    """Real invoices as a cashier's scans (see the module docstring)."""

    def __init__(
        self,
        *,
        path: Path | None = None,
        max_units_per_line: int = 3,
        item_gap_s: float = 0.8,
        repeat_gap_s: float = 1.5,
        basket_gap_s: float = 5.0,
        repeat: bool = True,
    ) -> None:
        self.path = path if path is not None else retail_path()
        self.max_units_per_line = max_units_per_line
        self.item_gap_s = item_gap_s
        self.repeat_gap_s = repeat_gap_s  # above the default 1 s double-read window
        self.basket_gap_s = basket_gap_s
        self.repeat = repeat

    def baskets(self) -> Iterator[Basket]:
        """The invoices with at least one scannable line, in file order."""
        with self.path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        for invoice, group in groupby(rows, key=lambda row: row["InvoiceNo"]):
            if invoice.startswith("C"):
                continue
            lines = tuple(line for row in group if (line := _line(row)) is not None)
            if lines:
                yield Basket(invoice=invoice, lines=lines)

    def scans(self) -> Iterator[PlannedScan]:
        """Endless (when ``repeat``) paced Code 128 scans of the baskets."""
        while True:
            for basket in self.baskets():
                delay = self.basket_gap_s
                for line in basket.lines:
                    for unit in range(min(line.quantity, self.max_units_per_line)):
                        yield PlannedScan(code=line.stock_code, aim="]C0", delay_s=delay)
                        delay = self.repeat_gap_s if unit + 1 < line.quantity else self.item_gap_s
                    delay = self.item_gap_s
            if not self.repeat:
                return


def _line(row: dict[str, str]) -> BasketLine | None:
    code = row.get("StockCode", "").strip()
    try:
        quantity = int(float(row.get("Quantity", "")))
    except ValueError:
        return None  # a malformed row of third-party data is skipped, not fatal
    if not _PRODUCT_CODE.match(code) or quantity <= 0:
        return None
    return BasketLine(stock_code=code, quantity=quantity, description=row.get("Description", "").strip())
