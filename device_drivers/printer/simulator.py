"""A receipt printer emulator: answers DLE EOT status, records every byte, keeps what it "printed".

:class:`EmulatedPrinter` is the printer itself, without I/O: bytes in, status answers out.
It frames the ESC/POS stream just enough to find the real-time status queries (``DLE EOT n``)
and the cuts (``GS V``) without mistaking bytes inside a bitmap, a barcode or a 2D code for
either. What it printed is kept as a list of receipts split at each cut, with the output since
the last cut kept apart (:attr:`EmulatedPrinter.partial`): a job cut short shows there.

Its state is switched by tests (and the demo): paper low or out, cover open, offline, an
error, or powered off, at once or after the next N bytes (mid-job). Powered off, it answers
nothing and prints nothing.

Two front ends put it where a driver finds a printer:

- :class:`PtyPrinter`: on a pty, so the driver opens a serial port (``/dev/pts/N``); the same
  path opened as a plain file stands in for a usblp device (``/dev/usb/lp0``). Powered off it
  drops every byte and answers nothing; :meth:`PtyPrinter.unplug` closes the pty (EIO, path gone).
- :class:`TcpPrinter`: on a loopback TCP port (9100 style). Powered off it closes every
  connection and refuses new ones; powered on it listens on the same port again.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Final, Literal, Self

from device_drivers.simulated.pty import PtyPort

DLE: Final = 0x10
EOT: Final = 0x04
ESC: Final = 0x1B
GS: Final = 0x1D
FS: Final = 0x1C

# Argument bytes of the fixed-length ESC and GS commands the emulator steps over, by command byte.
_ESC_ARGS: Final[dict[int, int]] = {
    ord(c): n for c, n in {"!": 1, "E": 1, "G": 1, "a": 1, "t": 1, "d": 1, "-": 1, "M": 1, "{": 1, "J": 1, "3": 1,
                            " ": 1, "R": 1, "c": 2, "p": 3, "$": 2, "\\": 2, "@": 0, "2": 0, "=": 1, "V": 1,
                            "e": 1, "r": 1, "U": 1}.items()
}  # fmt: skip
_GS_ARGS: Final[dict[int, int]] = {
    ord(c): n for c, n in {"!": 1, "h": 1, "w": 1, "f": 1, "H": 1, "b": 1, "B": 1, "L": 2, "W": 2, "a": 1,
                            "r": 1, "I": 1, "P": 2, "$": 2, "\\": 2}.items()
}  # fmt: skip

Paper = Literal["ok", "low", "out"]


@dataclass
class EmulatedPrinter:
    """The printer's state and memory; :meth:`feed` takes the bytes a driver sent and returns its answers."""

    online: bool = True
    paper: Paper = "ok"
    cover_open: bool = False
    error: Literal["autocutter", "unrecoverable", "overheat"] | None = None
    powered: bool = True
    received: bytearray = field(default_factory=bytearray)  # every byte taken while powered, queries included
    receipts: list[bytes] = field(default_factory=list)  # printed output, one entry per cut
    partial: bytearray = field(default_factory=bytearray)  # printed since the last cut
    status_queries: int = 0
    garble_answers: int = 0  # the next this many status answers are line noise (0xFF), to test rejects
    _pending: bytearray = field(default_factory=bytearray)
    _power_off_in: int | None = None

    # ---------------------------------------------------------------- switches

    def power_off_after(self, count: int) -> None:
        """Power off once ``count`` more bytes have arrived (mid-job), the rest of that chunk lost."""
        self._power_off_in = count

    def power_off(self) -> None:
        """Power off now: nothing answered or printed; uncut output stays in :attr:`partial`."""
        self.powered = False
        self._power_off_in = None
        self._pending.clear()

    def power_on(self) -> None:
        """Power on (state as it was, paper and cover included)."""
        self.powered = True

    # ---------------------------------------------------------------- status bytes

    def status_byte(self, n: int) -> int:
        """The answer to DLE EOT ``n`` (Epson ESC/POS: bits 1 and 4 always set)."""
        value = 0x12
        stopped = self.paper == "out" or self.cover_open or self.error is not None
        if n == 1:
            value |= 0x08 if (not self.online or stopped) else 0
        elif n == 2:
            value |= (0x04 if self.cover_open else 0) | (0x20 if self.paper == "out" else 0)
            value |= 0x40 if self.error is not None else 0
        elif n == 3:
            value |= {None: 0, "autocutter": 0x08, "unrecoverable": 0x20, "overheat": 0x40}[self.error]
        elif n == 4:
            value |= {"ok": 0, "low": 0x0C, "out": 0x6C}[self.paper]
        return value

    # ---------------------------------------------------------------- the byte stream

    def feed(self, data: bytes) -> bytes:
        """Take ``data``; the status answers to send back (nothing while powered off)."""
        if not self.powered:
            return b""
        if self._power_off_in is not None:
            if len(data) >= self._power_off_in:
                data, self._power_off_in = data[: self._power_off_in], 0
            else:
                self._power_off_in -= len(data)
        self.received += data
        self._pending += data
        answers = self._process()
        if self._power_off_in == 0:
            self.power_off()
            return b""
        return answers

    def _process(self) -> bytes:
        answers = bytearray()
        buf = self._pending
        i = 0
        while i < len(buf):
            size = _command_size(buf, i)
            if size is None:
                break  # an incomplete command: wait for the rest
            command = bytes(buf[i : i + size])
            if command[0] == DLE and size == 3 and command[1] == EOT:
                self.status_queries += 1
                if 1 <= command[2] <= 4:
                    garbled = self.garble_answers > 0
                    self.garble_answers -= int(garbled)
                    answers.append(0xFF if garbled else self.status_byte(command[2]))
            elif command[0] == GS and size >= 3 and command[1] == ord("V"):
                self.partial += command
                self.receipts.append(bytes(self.partial))
                self.partial.clear()
            else:
                self.partial += command
            i += size
        del buf[:i]
        return bytes(answers)


def _command_size(buf: bytearray, i: int) -> int | None:
    """Bytes of the command (or run of plain bytes) at ``i``, or None when it is not all there yet."""
    first = buf[i]
    if first not in (DLE, ESC, GS):
        end = i + 1
        while end < len(buf) and buf[end] not in (DLE, ESC, GS):
            end += 1
        return end - i
    if len(buf) - i < 2:
        return None
    second = buf[i + 1]
    if first == DLE:
        return (3 if len(buf) - i >= 3 else None) if second == EOT else 1
    if first == ESC:
        if second == ord("*"):  # ESC * m nL nH d...: 8-dot modes take 1 byte a column, 24-dot ones 3
            if len(buf) - i < 5:
                return None
            columns = buf[i + 3] | buf[i + 4] << 8
            return _need(buf, i, 5 + columns * (1 if buf[i + 2] in (0, 1) else 3))
        return _need(buf, i, 2 + _ESC_ARGS.get(second, 0))
    # GS
    if second == ord("V"):
        if len(buf) - i < 3:
            return None
        return _need(buf, i, 4 if buf[i + 2] >= 65 else 3)
    if second == ord("v"):  # GS v 0 m xL xH yL yH d...: raster image of (xL + xH*256) bytes x (yL + yH*256) rows
        if len(buf) - i < 8:
            return None
        width = buf[i + 4] | buf[i + 5] << 8
        height = buf[i + 6] | buf[i + 7] << 8
        return _need(buf, i, 8 + width * height)
    if second in (ord("("), ord("8")):  # GS ( k / GS ( L pL pH d... (and GS 8 L with 4 length bytes)
        if second == ord("8"):
            if len(buf) - i < 7:
                return None
            return _need(buf, i, 7 + int.from_bytes(buf[i + 3 : i + 7], "little"))
        if len(buf) - i < 5:
            return None
        return _need(buf, i, 5 + (buf[i + 3] | buf[i + 4] << 8))
    if second == ord("k"):  # GS k m: m 0-6 data NUL-ended; m 65-79 n then n bytes
        if len(buf) - i < 3:
            return None
        if buf[i + 2] <= 6:
            end = buf.find(b"\x00", i + 3)
            return None if end < 0 else end + 1 - i
        if len(buf) - i < 4:
            return None
        return _need(buf, i, 4 + buf[i + 3])
    return _need(buf, i, 2 + _GS_ARGS.get(second, 0))


def _need(buf: bytearray, i: int, size: int) -> int | None:
    return size if len(buf) - i >= size else None


# --------------------------------------------------------------------------- front ends


class PtyPrinter:
    """The emulator behind a pty: the driver opens :attr:`port` (serial, or as a usblp device file)."""

    def __init__(self, printer: EmulatedPrinter | None = None) -> None:
        self.printer = printer or EmulatedPrinter()
        self._pty = PtyPort()
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> str:
        """The pty path the driver opens."""
        return self._pty.port

    async def __aenter__(self) -> Self:
        self._pty.open()
        self._task = asyncio.create_task(self._serve(), name=f"printer emulator {self.port}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                # Read even while powered off: the bytes are lost, as on a printer with no power, and the
                # driver's writes never block on a full pty buffer.
                answers = self.printer.feed(await self._pty.read())
                if answers:
                    self._pty.write(answers)

    def unplug(self) -> None:
        """Pull the cable: the pty closes, the driver sees EIO and the path disappears."""
        self._pty.unplug()

    async def close(self) -> None:
        """Unplug and stop; idempotent."""
        self._pty.unplug()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class TcpPrinter:
    """The emulator on a loopback TCP port, as a network printer's raw port 9100."""

    def __init__(self, printer: EmulatedPrinter | None = None, *, host: str = "127.0.0.1") -> None:
        self.printer = printer or EmulatedPrinter()
        self.host = host
        self.port = 0
        self.connections_total = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        """``host:port`` as a driver's binding takes it."""
        return f"{self.host}:{self.port}"

    async def __aenter__(self) -> Self:
        await self._listen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections_total += 1
        try:
            while self.printer.powered:
                data = await reader.read(4096)
                if not data:
                    break
                answers = self.printer.feed(data)
                if not self.printer.powered:
                    self._cut_power()  # powered off mid-job: every connection dies with it
                    break
                if answers:
                    writer.write(answers)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            self._handlers.discard(task)

    async def power_off(self) -> None:
        """Power off: every connection is closed and new ones are refused."""
        self.printer.power_off()
        await self._stop()

    async def power_on(self) -> None:
        """Power on: listen on the same port again."""
        self.printer.power_on()
        if self._server is None:
            await self._listen()

    def _cut_power(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # new connections are refused
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()  # a power cut: no orderly close

    async def _stop(self) -> None:
        server = self._server
        self._cut_power()
        handlers = [task for task in self._handlers if task is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def close(self) -> None:
        """Stop listening and close every connection; idempotent."""
        await self._stop()
