"""The three ways bytes reach a receipt printer, behind one small interface: open, write, read, close.

- ``usb``: the kernel's usblp device file (``/dev/usb/lp0``), opened as a plain file
  descriptor and driven by the event loop (usblp reads back the printer's answers on
  bidirectional printers, which every ESC/POS model is). ``EBUSY`` (CUPS or another program
  has it) and a file gone after a power cycle are :class:`DeviceUnavailableError`: the
  supervisor opens it again later.
- ``serial``: a tty, through the toolkit's :class:`SerialTransport` (pyserial).
- ``network``: raw TCP to port 9100 (JetDirect style), with asyncio streams.

OS errors are converted here (``raise ... from err``): nothing above sees ``OSError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Callable
from typing import Final, Protocol

from device_drivers.base import DeviceUnavailableError
from device_drivers.printer.profile import DEFAULT_NETWORK_PORT, PrinterProfile
from device_drivers.profile_base import SerialLink
from device_drivers.toolkit.serialio import SerialTransport, wait_writable

_READ_CHUNK: Final = 256
CONNECT_TIMEOUT_S: Final = 5.0
# A write that makes no progress this long means the printer stopped taking bytes (off, or jammed with a full buffer).
WRITE_STALL_S: Final = 30.0


class PrinterLink(Protocol):
    """An open byte pipe to a printer."""

    address: str

    async def open(self) -> None:
        """Connect; DeviceUnavailableError when the printer cannot be reached."""
        ...

    async def write(self, data: bytes) -> None:
        """Send all of ``data``; DeviceUnavailableError when the connection is lost (``written`` says how far)."""
        ...

    async def read(self, timeout: float) -> bytes:
        """The next bytes the printer sent; TimeoutError, or DeviceUnavailableError when it went away."""
        ...

    async def discard_input(self) -> None:
        """Forget bytes received but not read (a late answer to an earlier query)."""
        ...

    async def close(self) -> None:
        """Close; idempotent."""
        ...

    @property
    def written(self) -> int:
        """Bytes the current job has handed to the OS so far (reset by :meth:`reset_written`)."""
        ...

    def reset_written(self) -> None:
        """Start counting a new job's bytes."""
        ...


class _Counting:
    def __init__(self) -> None:
        self._written = 0

    @property
    def written(self) -> int:
        return self._written

    def reset_written(self) -> None:
        self._written = 0

    async def read(self, timeout: float) -> bytes:
        raise NotImplementedError

    async def discard_input(self) -> None:
        # A zero timeout takes what is already buffered without waiting for more.
        with contextlib.suppress(TimeoutError):
            while True:
                await self.read(0)


def parse_network_address(address: str, default_port: int = DEFAULT_NETWORK_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``tcp://host:port`` or ``[v6]:port`` as (host, port); ValueError if malformed."""
    rest = address.removeprefix("tcp://").removeprefix("socket://").strip()
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port_text = tail.removeprefix(":") if tail.startswith(":") else ""
        if tail and not tail.startswith(":"):
            raise ValueError(f"not a printer address: {address!r}")
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host, port_text = rest, ""
    if not host or "/" in host:
        raise ValueError(f"not a printer address: {address!r} (expected host or host:port)")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"not a printer address: {address!r} (port is not a number)") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"not a printer address: {address!r} (port out of range)")
    return host, port


class TcpLink(_Counting):
    """A network printer's raw port (9100): one TCP connection per open."""

    def __init__(self, *, address: str, default_port: int = DEFAULT_NETWORK_PORT) -> None:
        super().__init__()
        self.address = address
        self.host, self.port = parse_network_address(address, default_port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as err:
            raise DeviceUnavailableError(
                f"cannot connect to printer {self.host}:{self.port}: {err or 'timed out'}"
            ) from err

    async def write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise DeviceUnavailableError(f"printer {self.address} is not connected")
        try:
            writer.write(data)
            async with asyncio.timeout(WRITE_STALL_S):
                await writer.drain()
        except (OSError, TimeoutError) as err:
            raise DeviceUnavailableError(
                f"connection to printer {self.address} lost: {err or 'write stalled'}"
            ) from err
        self._written += len(data)

    async def read(self, timeout: float) -> bytes:
        reader = self._reader
        if reader is None:
            raise DeviceUnavailableError(f"printer {self.address} is not connected")
        try:
            async with asyncio.timeout(timeout):
                chunk = await reader.read(_READ_CHUNK)
        except TimeoutError:
            raise  # no answer yet (TimeoutError is an OSError: it must not read as a lost connection)
        except OSError as err:
            raise DeviceUnavailableError(f"connection to printer {self.address} lost: {err}") from err
        if not chunk:
            raise DeviceUnavailableError(f"printer {self.address} closed the connection")
        return chunk

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class SerialPrinterLink(_Counting):
    """A serial (RS-232 or USB-serial) printer through the toolkit's SerialTransport."""

    def __init__(self, *, address: str, link: SerialLink) -> None:
        super().__init__()
        self.address = address
        self._transport = SerialTransport(url=address, link=link)

    async def open(self) -> None:
        await self._transport.__aenter__()

    async def write(self, data: bytes) -> None:
        try:
            async with asyncio.timeout(WRITE_STALL_S):
                await self._transport.write(data)
        except TimeoutError as err:
            raise DeviceUnavailableError(f"printer {self.address} stopped taking bytes") from err
        self._written += len(data)

    async def read(self, timeout: float) -> bytes:
        return await self._transport.read_chunk(timeout)

    async def close(self) -> None:
        await self._transport.close()


Opener = Callable[[str, int], int]


class UsbLpLink(_Counting):
    """A USB printer's usblp device file (``/dev/usb/lp0``), read and written without threads.

    ``opener`` is ``os.open``; tests pass one that fails as the kernel does for a busy printer
    (usblp lets one process at a time have it: EBUSY), which a pty cannot.
    """

    def __init__(self, *, address: str, opener: Opener = os.open) -> None:
        super().__init__()
        self.address = address
        self._opener = opener
        self._fd: int | None = None
        self._chunks: asyncio.Queue[bytes | DeviceUnavailableError] = asyncio.Queue()

    async def open(self) -> None:
        try:
            fd = self._opener(self.address, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as err:
            if err.errno == errno.EBUSY:
                raise DeviceUnavailableError(f"printer {self.address} is busy (another program has it open)") from err
            raise DeviceUnavailableError(f"cannot open printer {self.address}: {err.strerror or err}") from err
        self._fd = fd
        self._chunks = asyncio.Queue()
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def _readable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as err:  # ENODEV / EIO: unplugged or powered off
            asyncio.get_running_loop().remove_reader(fd)
            self._chunks.put_nowait(DeviceUnavailableError(f"printer {self.address} went away: {err.strerror or err}"))
            return
        if not chunk:
            asyncio.get_running_loop().remove_reader(fd)
            self._chunks.put_nowait(DeviceUnavailableError(f"printer {self.address} went away (end of file)"))
            return
        self._chunks.put_nowait(chunk)

    async def write(self, data: bytes) -> None:
        fd = self._fd
        if fd is None:
            raise DeviceUnavailableError(f"printer {self.address} is not open")
        view = memoryview(data)
        while view:
            try:
                count = os.write(fd, view)
            except BlockingIOError:
                await self._writable(fd)
                continue
            except OSError as err:
                raise DeviceUnavailableError(f"printer {self.address} went away: {err.strerror or err}") from err
            view = view[count:]
            self._written += count

    async def _writable(self, fd: int) -> None:
        try:
            await wait_writable(fd, timeout_s=WRITE_STALL_S)
        except TimeoutError as err:
            raise DeviceUnavailableError(f"printer {self.address} stopped taking bytes") from err

    async def read(self, timeout: float) -> bytes:
        if self._fd is None:
            raise DeviceUnavailableError(f"printer {self.address} is not open")
        async with asyncio.timeout(timeout):
            item = await self._chunks.get()
        if isinstance(item, DeviceUnavailableError):
            self._chunks.put_nowait(item)  # every later read fails the same way
            raise item
        return item

    async def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)


def make_link(profile: PrinterProfile, address: str) -> PrinterLink:
    """The link for ``profile``'s transport at ``address``; ValueError for a malformed network address."""
    if profile.transport == "network":
        return TcpLink(address=address, default_port=profile.port)
    if profile.transport == "serial":
        return SerialPrinterLink(address=address, link=profile.serial or SerialLink())
    return UsbLpLink(address=address)
