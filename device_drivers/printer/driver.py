"""The receipt printer driver: print jobs that are either printed or say they may not be, and status as events.

Addresses (``binding.address``), by the profile's ``transport``:

- ``usb``: the usblp device file, e.g. ``/dev/usb/lp0`` (found by hot-plug from the USB ids);
- ``serial``: a tty or a pyserial URL, e.g. ``/dev/ttyUSB0``;
- ``network``: ``host``, ``host:port`` or ``tcp://host:port`` (port 9100 by default), from the config.

Commands (``execute``):

- ``print``: the document in ``args`` (``pick_list``, ``test_page``, ``receipt``; see
  :mod:`device_drivers.printer.render`) is rendered, the status read (DLE EOT): when the printer
  is offline, out of paper or open, :class:`PrinterNotReadyError` and nothing is sent. Else the
  whole job is written and the status read again: ``done`` only when the printer answers online
  after the job. A connection lost during the job, no answer after it, or an offline answer
  raise :class:`DeviceUnavailableError` saying the job may be partly printed (the queue prints
  it again with ``attempt`` + 1, which heads the copy with a reprint notice). Bad arguments
  raise :class:`PrintJobInvalidError` (not retryable).
- ``status``: the status now, as the result's detail; ``ping``: the driver's state, no I/O.

Readings: ``printer.status`` (:class:`~storegate.wire.PrinterStatus`) on open and on every
change, read every ``status_interval_s`` while idle and after each job. Jobs and status reads
hold one lock, so their bytes never interleave. When the printer goes away ``readings()``
raises DeviceUnavailableError and the agent's supervisor opens the driver again: a USB printer
that was busy or power-cycled comes back without restarting the agent.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import structlog

from device_drivers.base import (
    CommandNotSupportedError,
    DeviceNotReadyError,
    DeviceUnavailableError,
    Driver,
    DriverError,
    DriverHealth,
    ProtocolError,
    Reading,
)
from device_drivers.ports import DeviceBinding
from device_drivers.printer.errors import PrinterNotReadyError, PrintJobInvalidError
from device_drivers.printer.fonts import find_cjk_font
from device_drivers.printer.profile import PrinterProfile, PrinterSettings
from device_drivers.printer.protocol import OFFLINE_BITS, STATUS_QUERY, PrinterState, check_status_byte, parse_status
from device_drivers.printer.render import escpos_profile_known, parse_document, render
from device_drivers.printer.transport import PrinterLink, make_link
from device_drivers.toolkit.commands import answer_ping, command_result
from device_drivers.toolkit.health import HealthRecord
from device_drivers.toolkit.rejects import RejectCounter
from storegate.clock import SYSTEM_CLOCK, Clock
from storegate.wire import Command, CommandResult, EventKind

log = structlog.get_logger(__name__)

# The state of a printer that does not answer status (profile ``status = false``): assumed ready.
UNKNOWN_STATE: Final = PrinterState(online=True, paper="unknown", cover_open=None)
_ERROR_BIT: Final = next(bit for bit, name in OFFLINE_BITS.items() if name == "error")

LinkFactory = Callable[[PrinterProfile, str], PrinterLink]


@functools.cache
def system_cjk_font() -> Path | None:
    """The gateway's CJK font, looked for once per process (fonts are installed with the system, not at run time)."""
    return find_cjk_font()


class PrinterDriver:
    """One ESC/POS receipt printer on USB, serial or the network."""

    def __init__(
        self,
        *,
        profile: PrinterProfile,
        binding: DeviceBinding,
        settings: PrinterSettings,
        clock: Clock = SYSTEM_CLOCK,
        link_factory: LinkFactory = make_link,
        cjk_font: Path | Callable[[], Path | None] | None = find_cjk_font,
    ) -> None:
        self.profile = profile
        self.binding = binding
        self.settings = settings
        self._clock = clock
        self._link_factory = link_factory
        self._cjk_font_source = cjk_font
        self.cjk_font: Path | None = None
        self.record = HealthRecord()
        self.rejects = RejectCounter(
            logger=log,
            device_id=binding.device_id,
            health=self.record,
            event="status_answer_rejected",
            noun="status answers",
        )
        self._link: PrinterLink | None = None
        self._lock = asyncio.Lock()  # one job or one status read at a time: their bytes must not interleave
        self.state: PrinterState | None = None
        self._changed = asyncio.Event()
        self.jobs_printed = 0
        self.bytes_printed = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        self.record.opening()
        if not escpos_profile_known(self.profile.escpos_profile):
            message = (
                f"profile {self.profile.id}: escpos_profile {self.profile.escpos_profile!r} is not python-escpos's"
            )
            self.record.down(message)
            raise DriverError(message)
        if callable(self._cjk_font_source):
            # fc-list runs once per process, in a thread: the loop keeps serving the other devices meanwhile.
            self.cjk_font = None if self.profile.gb18030 else await asyncio.to_thread(self._cjk_font_source)
        else:
            self.cjk_font = self._cjk_font_source
        try:
            link = self._link_factory(self.profile, self.binding.address)
        except ValueError as err:
            self.record.down(str(err))
            raise DriverError(str(err)) from err
        try:
            await link.open()
            self._link = link
            async with self._lock:
                self._note(await self._read_state())
        except DriverError as err:
            await link.close()
            self._link = None
            self.record.down(str(err))
            raise
        except BaseException:
            await link.close()
            self._link = None
            raise
        self.record.up()
        status = _describe(self.state) if self.state is not None else "unknown"
        log.info("printer_open", device_id=self.binding.device_id, address=self.binding.address, status=status)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.record.closed()
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    def health(self) -> DriverHealth:
        """State, last error and counts, and what a person must see to (paper out or low, cover open), without I/O."""
        health = self.record.snapshot()
        state = self.state
        if not self.record.is_up or state is None:
            return health
        attention = state.not_ready_reason or ("paper low" if state.paper == "low" else None)
        return replace(health, attention=attention)

    # ------------------------------------------------------------------ status

    async def _ask(self, link: PrinterLink, n: int) -> int:
        """The answer to DLE EOT ``n``; one garbled answer is counted and asked again, a second is a ProtocolError."""
        for attempt in (1, 2):
            await link.write(STATUS_QUERY[n])
            try:
                data = await link.read(self.profile.status_timeout_s)
            except TimeoutError:
                raise DeviceUnavailableError(
                    f"printer {self.binding.device_id} did not answer DLE EOT {n} "
                    f"within {self.profile.status_timeout_s:g} s"
                ) from None
            try:
                return check_status_byte(n, data[-1])
            except ProtocolError as err:
                self.rejects.reject("bad_status_answer", str(err), address=self.binding.address, answer=data.hex())
                if attempt == 2:
                    raise
                await link.discard_input()
        raise AssertionError("unreachable")

    async def _read_state(self) -> PrinterState:
        """The printer's status now (the caller holds the lock)."""
        link = self._link
        if link is None:
            raise DeviceUnavailableError(f"printer {self.binding.device_id} is not open")
        if not self.profile.status:
            return UNKNOWN_STATE
        await link.discard_input()
        printer = await self._ask(link, 1)
        offline = await self._ask(link, 2)
        paper = await self._ask(link, 4)
        error = await self._ask(link, 3) if offline & _ERROR_BIT else None
        self.rejects.accepted()
        return parse_status(printer, offline, paper, error)

    def _note(self, state: PrinterState) -> None:
        if state != self.state:
            if self.state is not None:
                log.info("printer_status_changed", device_id=self.binding.device_id, status=_describe(state))
            self.state = state
            self._changed.set()

    async def _poll(self) -> PrinterState:
        async with self._lock:
            try:
                state = await self._read_state()
            except DriverError as err:
                raise self._gone(err) from err
            self._note(state)
            return state

    def _gone(self, err: DriverError) -> DriverError:
        if isinstance(err, DeviceUnavailableError):
            self.record.down(str(err))
            # Wake readings() at once: it ends, and the supervisor reopens the printer now rather than at the
            # next idle poll, which may be an hour away.
            self._changed.set()
        return err

    def _reading(self, state: PrinterState) -> Reading:
        ts = self._clock.now()
        self.record.read(ts)
        payload = state.to_wire().model_dump(mode="json")
        return Reading(device_id=self.binding.device_id, kind=EventKind.PRINTER_STATUS, ts=ts, payload=payload)

    async def readings(self) -> AsyncIterator[Reading]:
        """The status on open, then every change (polled while idle, and read after each job)."""
        if not self.record.is_up or self.state is None:
            raise DeviceUnavailableError(f"printer {self.binding.device_id} is not open")
        reported = self.state
        self._changed.clear()
        yield self._reading(reported)
        while self.record.is_up:
            try:
                async with asyncio.timeout(self.settings.status_interval_s):
                    await self._changed.wait()
            except TimeoutError:
                await self._poll()
            self._changed.clear()
            if self.state is not None and self.state != reported:
                reported = self.state
                yield self._reading(reported)
        raise DeviceUnavailableError(f"printer {self.binding.device_id}: {self.record.last_error or 'closed'}")

    # ------------------------------------------------------------------ commands

    async def execute(self, command: Command) -> CommandResult:
        """``print`` a document, read the ``status``, or answer ``ping``; see the module docstring."""
        now = self._clock.now
        if command.name == "print":
            detail = await self.print_document(dict(command.args))
            return command_result(command, "done", detail, now=now())
        if command.name == "status":
            state = await self._poll()
            return command_result(command, "done", _describe(state), now=now())
        if command.name == "ping":
            state_text = _describe(self.state) if self.state is not None else "status unknown"
            return answer_ping(
                command,
                device_id=self.binding.device_id,
                now=now(),
                detail=f"{self.record.state.value}, {state_text}",
                ok=self.record.is_up,
            )
        raise CommandNotSupportedError(f"{self.binding.device_id} does not support command {command.name!r}")

    async def print_document(self, args: dict[str, object]) -> str:
        """Render and print one document; the result's detail, or the errors of the module docstring."""
        document = parse_document(args)
        try:
            job = render(document, self.profile, cjk_font=self.cjk_font, header=self.settings.header)
        except (ValueError, OSError) as err:  # python-escpos refusing a barcode, an unreadable font
            raise PrintJobInvalidError(f"{document.document} cannot be rendered: {err}") from err
        device = self.binding.device_id
        async with self._lock:
            link = self._link
            if link is None or not self.record.is_up:
                # Nothing was sent: the print queue's next try is still the same attempt.
                raise DeviceNotReadyError(f"printer {device} is not open: {job.summary} not printed")
            try:
                before = await self._read_state()
            except DriverError as err:
                raise self._gone(DeviceUnavailableError(f"printer {device}: {err}; {job.summary} not printed")) from err
            self._note(before)
            reason = before.not_ready_reason
            if reason is not None:
                raise PrinterNotReadyError(f"printer {device} is not ready ({reason}): {job.summary} not printed")
            link.reset_written()
            try:
                await link.write(job.data)
            except DeviceUnavailableError as err:
                raise self._gone(
                    DeviceUnavailableError(
                        f"printer {device}: connection lost after {link.written} of {len(job.data)} bytes "
                        f"of {job.summary}: the job may be partly printed ({err})"
                    )
                ) from err
            try:
                after = await self._read_state()
            except DriverError as err:
                raise self._gone(
                    DeviceUnavailableError(
                        f"printer {device}: no status after {job.summary} ({err}): the job may be partly printed"
                    )
                ) from err
            self._note(after)
            if not after.online or after.paper == "out" or after.cover_open:
                raise DeviceUnavailableError(
                    f"printer {device} went {after.not_ready_reason or 'offline'} during {job.summary}: "
                    "the job may be partly printed"
                )
        self.jobs_printed += 1
        self.bytes_printed += len(job.data)
        warnings = f" ({'; '.join(job.warnings)})" if job.warnings else ""
        log.info("printer_job_printed", device_id=device, job=job.summary, bytes=len(job.data))
        return f"printed {job.summary}, {len(job.data)} bytes{warnings}"


def _describe(state: PrinterState) -> str:
    parts = ["online" if state.online else "offline", f"paper {state.paper}"]
    if state.cover_open:
        parts.append("cover open")
    parts.extend(sorted(state.errors))
    return ", ".join(parts)


def create(*, profile: PrinterProfile, binding: DeviceBinding, settings: PrinterSettings) -> Driver:
    """The driver of one receipt printer."""
    driver: Driver = PrinterDriver(profile=profile, binding=binding, settings=settings)
    return driver
