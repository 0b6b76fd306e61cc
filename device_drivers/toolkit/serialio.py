"""Async byte and line I/O over a serial port, for every serial driver.

The port is named by one string, as pyserial's ``serial_for_url`` takes it: a device
node (``/dev/ttyACM0``, a pty's ``/dev/pts/5``) or a URL (``socket://host:port``,
``loop://``). Device nodes are read without threads through the event loop
(``add_reader`` on the file descriptor); URLs without a descriptor are read in a
worker thread. OS and pyserial errors become :class:`DeviceUnavailableError`
here (``raise ... from err``), so nothing above sees ``OSError`` or ``SerialException``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from types import TracebackType
from typing import Final, Self

import serial

from device_drivers.base import DeviceUnavailableError
from device_drivers.profile_base import SerialLink

# A line longer than this is garbage (noise on the line, a wrong baud rate): it is dropped, counted.
DEFAULT_MAX_LINE: Final = 4096
_READ_CHUNK: Final = 4096
# Chunks read but not yet taken, at most: beyond, reading pauses and the kernel's tty buffer (and
# the device's flow control) holds the rest, so a stalled consumer never grows this process.
_MAX_CHUNKS: Final = 256


class LineTooLongError(Exception):
    """Raised by :meth:`SerialTransport.read_line` for a line over the limit (the bytes are dropped)."""


class SerialTransport:
    """One open serial port: ``read_line`` and ``write``; an async context manager."""

    def __init__(self, *, url: str, link: SerialLink, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.url = url
        self.link = link
        self.max_line = max_line
        self.bytes_read = 0
        self._port: serial.SerialBase | None = None
        self._buffer = bytearray()
        self._chunks: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self._fd: int | None = None
        self._paused = False  # the fd's reader is off while _MAX_CHUNKS wait
        self._reader_thread: asyncio.Task[None] | None = None
        self._discarding = False  # inside an over-long line: drop bytes up to its terminator

    async def __aenter__(self) -> Self:
        try:
            port = serial.serial_for_url(
                self.url,
                do_not_open=True,
                baudrate=self.link.baudrate,
                bytesize=self.link.bytesize,
                parity=self.link.parity,
                stopbits=self.link.stopbits,
                rtscts=self.link.rtscts,
                xonxoff=self.link.xonxoff,
                timeout=0.2,
            )
            if isinstance(port, serial.Serial) and os.name == "posix":
                port.exclusive = True  # flock: a second driver on the same port fails instead of stealing bytes
            port.open()
        except (serial.SerialException, OSError, ValueError) as err:
            raise DeviceUnavailableError(f"cannot open {self.url}: {err}") from err
        self._port = port
        loop = asyncio.get_running_loop()
        fd = _fileno(port)
        if fd is not None:
            self._fd = fd
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._readable)
        else:
            self._reader_thread = asyncio.create_task(self._read_in_thread(port), name=f"serial reader {self.url}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the port; idempotent."""
        port, self._port = self._port, None
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None
        if self._reader_thread is not None:
            self._reader_thread.cancel()
            await asyncio.gather(self._reader_thread, return_exceptions=True)
            self._reader_thread = None
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()

    @property
    def is_open(self) -> bool:
        """Whether the port is open."""
        return self._port is not None

    @property
    def partial_line(self) -> bytes:
        """The start of a line not ended yet (empty inside an over-long line): what a device cut off had sent."""
        return b"" if self._discarding else bytes(self._buffer)

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            chunk = os.read(self._fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as err:  # EIO: the USB device was unplugged, or the pty's other end closed
            self._stop_reading(DeviceUnavailableError(f"{self.url} went away: {err.strerror or err}"))
            return
        if not chunk:
            self._stop_reading(DeviceUnavailableError(f"{self.url} went away (end of file)"))
            return
        self._chunks.put_nowait(chunk)
        if self._chunks.qsize() >= _MAX_CHUNKS:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._paused = True

    def _stop_reading(self, error: BaseException) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
        self._chunks.put_nowait(error)

    async def _read_in_thread(self, port: serial.SerialBase) -> None:
        while True:
            try:
                chunk = await asyncio.to_thread(port.read, _READ_CHUNK)
            except (serial.SerialException, OSError) as err:
                self._chunks.put_nowait(DeviceUnavailableError(f"{self.url} went away: {err}"))
                return
            if chunk:
                self._chunks.put_nowait(bytes(chunk))

    async def read_chunk(self, timeout: float | None = None) -> bytes:
        """The next bytes the device sent (buffered bytes first); raises DeviceUnavailableError, TimeoutError."""
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        return await self._next_chunk(timeout)

    async def _next_chunk(self, timeout: float | None) -> bytes:
        if self._port is None:
            raise DeviceUnavailableError(f"{self.url} is not open")
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races an arriving chunk.
        async with asyncio.timeout(timeout):
            item = await self._chunks.get()
        if self._paused and self._fd is not None and self._chunks.qsize() < _MAX_CHUNKS // 2:
            self._paused = False
            asyncio.get_running_loop().add_reader(self._fd, self._readable)
        if isinstance(item, BaseException):
            self._chunks.put_nowait(item)  # every later read fails the same way
            raise item
        self.bytes_read += len(item)
        return item

    async def read_line(self, *, terminators: bytes = b"\r\n", timeout: float | None = None) -> bytes:
        """The next line without its terminator (any byte of ``terminators`` ends a line; empty lines skipped).

        Raises TimeoutError when no complete line came within ``timeout`` seconds,
        LineTooLongError for a line over ``max_line`` bytes (dropped up to its end),
        DeviceUnavailableError when the port went away.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            cut = _first_terminator(self._buffer, terminators)
            if cut is not None:
                line = bytes(self._buffer[:cut])
                del self._buffer[: cut + 1]
                if self._discarding or len(line) > self.max_line:
                    self._discarding = False
                    raise LineTooLongError(f"a line from {self.url} exceeded {self.max_line} bytes")
                if line:
                    return line
                continue
            if len(self._buffer) > self.max_line:
                self._buffer.clear()
                self._discarding = True
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            self._buffer += await self._next_chunk(remaining)

    async def write(self, data: bytes) -> None:
        """Write all of ``data``; raises DeviceUnavailableError when the port is gone."""
        port = self._port
        if port is None:
            raise DeviceUnavailableError(f"{self.url} is not open")
        try:
            if self._fd is not None:
                view = memoryview(data)
                while view:
                    try:
                        written = os.write(self._fd, view)
                    except BlockingIOError:
                        await wait_writable(self._fd)  # output buffer full: wait until the line drains
                        continue
                    view = view[written:]
            else:
                await asyncio.to_thread(port.write, data)
        except (serial.SerialException, OSError) as err:
            raise DeviceUnavailableError(f"cannot write to {self.url}: {err}") from err


async def wait_writable(fd: int, *, timeout_s: float | None = None) -> None:
    """Wait until ``fd`` takes bytes again (its output buffer drained); TimeoutError after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        async with asyncio.timeout(timeout_s):
            await ready
    finally:
        loop.remove_writer(fd)


def _fileno(port: serial.SerialBase) -> int | None:
    try:
        fd = port.fileno()
    except (AttributeError, NotImplementedError, serial.SerialException, OSError):
        return None
    return fd if isinstance(fd, int) else None


def _first_terminator(buffer: bytearray, terminators: bytes) -> int | None:
    positions = [i for i in (buffer.find(t) for t in terminators) if i >= 0]
    return min(positions) if positions else None
