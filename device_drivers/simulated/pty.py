"""A pseudo-terminal pair that plays a plugged-in serial device for simulated firmware.

The simulated firmware holds the master end; a driver opens :attr:`PtyPort.port`
(``/dev/pts/N``) with pyserial exactly as it would open ``/dev/ttyACM0``. Bytes flow
through the kernel's tty layer, so drivers are tested against real serial I/O.
:meth:`PtyPort.unplug` closes both ends: the driver's next read fails with EIO and the
path disappears, as when a USB device is pulled out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from typing import Final, Self

_READ_CHUNK: Final = 4096


class PtyPort:
    """The firmware's side of a pty pair; open it with ``async with`` or :meth:`open`."""

    def __init__(self) -> None:
        self._master: int | None = None
        self._slave: int | None = None
        self.port = ""
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._buffer = bytearray()

    def open(self) -> Self:
        """Create the pair (raw mode, no echo) and start reading the master end on the running loop."""
        master, slave = os.openpty()
        tty.setraw(slave, termios.TCSANOW)
        tty.setraw(master, termios.TCSANOW)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.port = os.ttyname(slave)
        asyncio.get_running_loop().add_reader(master, self._readable)
        return self

    async def __aenter__(self) -> Self:
        return self.open()

    async def __aexit__(self, *exc: object) -> None:
        self.unplug()

    @property
    def plugged(self) -> bool:
        """Whether the pair is open."""
        return self._master is not None

    def _readable(self) -> None:
        assert self._master is not None
        try:
            chunk = os.read(self._master, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: no process has the driver's end open right now; nothing to read
            chunk = b""
        if chunk:
            self._chunks.put_nowait(chunk)

    def write(self, data: bytes) -> None:
        """Send bytes to the driver (dropped, as on a real line, when nobody has the port open)."""
        if self._master is None:
            raise ConnectionError("the simulated device is unplugged")
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._master, data)

    async def read(self, timeout: float | None = None) -> bytes:
        """The next bytes the driver wrote; raises TimeoutError, ConnectionError once unplugged."""
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        async with asyncio.timeout(timeout):  # not wait_for: see device_drivers.toolkit.serialio
            chunk = await self._chunks.get()
        if chunk is None:
            self._chunks.put_nowait(None)
            raise ConnectionError("the simulated device is unplugged")
        return chunk

    async def read_line(self, *, terminator: bytes = b"\n", timeout: float | None = None) -> bytes:
        """The next line the driver wrote, without ``terminator`` (a trailing CR is kept)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while (cut := self._buffer.find(terminator)) < 0:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            self._buffer += await self.read(remaining)
        line = bytes(self._buffer[:cut])
        del self._buffer[: cut + len(terminator)]
        return line

    def unplug(self) -> None:
        """Close both ends: the driver sees EIO and the port path disappears. Idempotent."""
        master, slave = self._master, self._slave
        self._master = self._slave = None
        if master is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(master)
            os.close(master)
            self._chunks.put_nowait(None)
        if slave is not None:
            os.close(slave)


class NullModem:
    """Two pty pairs joined master to master: a serial cable with a device node at each end.

    For simulated devices that are themselves programs opening a serial port (a pymodbus
    server, say): the simulator opens :attr:`device_port`, the driver opens :attr:`port`.
    Every byte crossing the cable is also kept in :attr:`to_device` / :attr:`from_device`
    (when ``record`` is set), so tests can compare the traffic byte for byte.
    :meth:`unplug` closes everything: the driver sees EIO and its path disappears.
    """

    def __init__(self, *, record: bool = False) -> None:
        self._driver_end = PtyPort()
        self._device_end = PtyPort()
        self.record = record
        self.to_device = bytearray()
        self.from_device = bytearray()
        self._pumps: list[asyncio.Task[None]] = []

    @property
    def port(self) -> str:
        """The node the driver opens."""
        return self._driver_end.port

    @property
    def device_port(self) -> str:
        """The node the simulated device opens."""
        return self._device_end.port

    def open(self) -> Self:
        """Create both pairs and start carrying bytes between them."""
        self._driver_end.open()
        self._device_end.open()
        self._pumps = [
            asyncio.create_task(self._pump(self._driver_end, self._device_end, self.to_device), name="null modem >"),
            asyncio.create_task(self._pump(self._device_end, self._driver_end, self.from_device), name="null modem <"),
        ]
        return self

    async def __aenter__(self) -> Self:
        return self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _pump(self, source: PtyPort, sink: PtyPort, log: bytearray) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                chunk = await source.read()
                if self.record:
                    log += chunk
                with contextlib.suppress(ConnectionError):
                    sink.write(chunk)

    def unplug(self) -> None:
        """Pull the cable out: both ends close (the pumps stop on their own)."""
        self._driver_end.unplug()
        self._device_end.unplug()

    async def close(self) -> None:
        """Unplug and wait for the pumps to stop. Idempotent."""
        self.unplug()
        for task in self._pumps:
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        self._pumps = []
