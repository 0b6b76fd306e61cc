"""Barcode scanner drivers: serial (USB CDC-ACM, RS-232) and keyboard wedge (USB HID through evdev).

Both turn each scanned code into one ``scan.sale`` / ``scan.receiving`` / ``scan.count``
reading (by the mode in the settings, changeable with the ``set_mode`` command), after
validation (:func:`.scan.decode`) and double-read suppression. A bad code is counted
(``rejected_total``, per reason in ``rejected_by_reason``), logged with its context on the
1st, 10th, 100th... reject of a run, and skipped; the driver keeps running. A GS1 code kept
with ``gs1_incomplete`` (``gs1_strict`` off) is counted in ``gs1_incomplete_total`` and logged.

``binding.address`` is a serial device node or pyserial URL for ``interface = "serial"``,
and an evdev node (``/dev/input/by-id/usb-...-event-kbd``) for ``interface = "hid"``. The
HID driver grabs the device, so the scanner's keystrokes never reach a console or a
desktop; ``evdev`` is imported only when a HID scanner is opened.
"""

from __future__ import annotations

import contextlib
import errno
from collections import Counter
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Protocol, Self

import structlog

from device_drivers.barcode.keymap import KeyDecoder, key_code
from device_drivers.barcode.profile import TERMINATOR_BYTES, BarcodeProfile, BarcodeSettings
from device_drivers.barcode.scan import KIND_OF_MODE, DecodeOptions, DoubleReadFilter, decode
from device_drivers.barcode.symbology import BarcodeRejectedError, RejectReason
from device_drivers.base import CommandNotSupportedError, DeviceUnavailableError, Driver, DriverHealth, Reading
from device_drivers.ports import DeviceBinding
from device_drivers.toolkit.commands import ResultStatus, command_result
from device_drivers.toolkit.health import HealthRecord
from device_drivers.toolkit.rejects import RejectCounter
from device_drivers.toolkit.serialio import LineTooLongError, SerialTransport
from storegate.clock import SYSTEM_CLOCK, Clock
from storegate.wire import Command, CommandResult, ScanMode

log = structlog.get_logger(__name__)

_MODES: tuple[ScanMode, ...] = ("checkout", "receiving", "stock_count")


class ScanPipeline:
    """What both drivers share: validation, double reads, mode, counters, commands and health."""

    def __init__(
        self,
        *,
        profile: BarcodeProfile,
        binding: DeviceBinding,
        settings: BarcodeSettings,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.binding = binding
        self.mode: ScanMode = settings.mode
        self.options = DecodeOptions(
            aim_ids=profile.aim_ids,
            programmed=frozenset(profile.symbologies),
            gs1_strict=settings.gs1_strict,
            variable_measure=settings.variable_measure,
            max_length=profile.max_length,
        )
        self.double_reads = DoubleReadFilter(window_s=settings.double_read_window_s, clock=clock.monotonic)
        self._clock = clock
        self.record = HealthRecord()
        self.rejects = RejectCounter(
            logger=log, device_id=binding.device_id, health=self.record, event="barcode rejected", noun="code(s)"
        )
        self.partial_discarded_total = 0
        self.gs1_incomplete_total = 0

    @property
    def readings_total(self) -> int:
        """Scans reported since the driver was made."""
        return self.record.readings_total

    @property
    def rejected_total(self) -> int:
        """Codes rejected since the driver was made."""
        return self.rejects.total

    @property
    def rejected_by_reason(self) -> Counter[str]:
        """Codes rejected, by reason (``bad_check_digit``, ``too_long``, ``partial``...)."""
        return self.rejects.by_reason

    @property
    def suppressed_total(self) -> int:
        """Double reads suppressed so far."""
        return self.double_reads.suppressed_total

    def handle(self, text: str) -> Reading | None:
        """The reading for one scanned text, or None when it was rejected or a double read."""
        try:
            scan = decode(text, mode=self.mode, options=self.options)
        except BarcodeRejectedError as err:
            self.reject(err.reason, err.detail, text=text)
            return None
        self.rejects.accepted()
        if scan.gs1_incomplete:
            # Kept (gs1_strict is off) and flagged on the wire; counted and logged so a bad label is found.
            self.gs1_incomplete_total += 1
            log.warning(
                "barcode GS1 data incomplete",
                device_id=self.binding.device_id,
                address=self.binding.address,
                problem=scan.gs1_problem,
                raw=text[:80],
                incomplete_total=self.gs1_incomplete_total,
            )
        if not self.double_reads.admit(scan.code):
            log.debug("barcode double read suppressed", device_id=self.binding.device_id, code=scan.code)
            return None
        ts = self._clock.now()
        self.record.read(ts)
        return Reading(
            device_id=self.binding.device_id,
            kind=KIND_OF_MODE[self.mode],
            ts=ts,
            payload=scan.model_dump(mode="json", exclude_none=True),
        )

    def reject(self, reason: RejectReason, detail: str, *, text: str | None = None) -> None:
        """Count and (1st, 10th, 100th... of a run) log one unacceptable code."""
        self.rejects.reject(
            reason.value, detail, address=self.binding.address, raw=text[:80] if text is not None else None
        )

    async def execute(self, command: Command) -> CommandResult:
        """``ping``, and ``set_mode`` with ``{"mode": "checkout" | "receiving" | "stock_count"}``."""
        if command.name == "ping":
            return self._result(command, "done", "pong")
        if command.name == "set_mode":
            mode = command.args.get("mode")
            if mode not in _MODES:
                return self._result(command, "rejected", f"mode must be one of {', '.join(_MODES)}; got {mode!r}")
            old, self.mode = self.mode, _MODES[_MODES.index(mode)]
            log.info("barcode mode changed", device_id=self.binding.device_id, old=old, new=self.mode)
            return self._result(command, "done", f"mode {self.mode}")
        raise CommandNotSupportedError(f"{self.binding.device_id} does not support command {command.name!r}")

    def _result(self, command: Command, status: ResultStatus, detail: str) -> CommandResult:
        return command_result(command, status, detail, now=self._clock.now())

    def health(self) -> DriverHealth:
        """State, last error and reading counters, without I/O."""
        return self.record.snapshot()


class SerialBarcodeDriver(ScanPipeline):
    """A scanner on a serial line: one code per line, ended by the profile's terminator."""

    def __init__(
        self,
        *,
        profile: BarcodeProfile,
        binding: DeviceBinding,
        settings: BarcodeSettings,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(profile=profile, binding=binding, settings=settings, clock=clock)
        self.profile = profile
        self._transport: SerialTransport | None = None
        self._bytes_read_before = 0  # of earlier opens

    @property
    def bytes_read(self) -> int:
        """Bytes received from the scanner since this driver was created."""
        transport = self._transport
        return self._bytes_read_before + (transport.bytes_read if transport is not None else 0)

    async def __aenter__(self) -> Self:
        self.record.opening()
        # A line longer than the longest code is no code: the transport drops it (counted below).
        transport = SerialTransport(
            url=self.binding.address, link=self.profile.serial, max_line=self.profile.max_length
        )
        try:
            await transport.__aenter__()
        except DeviceUnavailableError as err:
            self.record.down(err)
            raise
        self._transport = transport
        self.record.up()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            self._bytes_read_before += transport.bytes_read
            await transport.close()
        self.record.closed()

    async def readings(self) -> AsyncIterator[Reading]:
        """One reading per accepted scan; raises DeviceUnavailableError when the port goes away."""
        transport = self._transport
        if transport is None:
            raise DeviceUnavailableError(f"{self.binding.address} is not open")
        terminators = TERMINATOR_BYTES[self.profile.terminator]
        while True:
            try:
                raw = await transport.read_line(terminators=terminators)
            except LineTooLongError:
                self.reject(RejectReason.TOO_LONG, f"a line over {self.profile.max_length} bytes")
                continue
            except DeviceUnavailableError as err:
                partial = transport.partial_line
                if partial.strip(terminators):
                    # Unplugged mid-code: the bytes that came are not a code, and are not sent.
                    self.partial_discarded_total += 1
                    self.reject(RejectReason.PARTIAL, f"code cut off: {err}", text=repr(partial))
                self.record.down(err)
                raise
            reading = self._line(raw)
            if reading is not None:
                yield reading

    def _line(self, raw: bytes) -> Reading | None:
        try:
            text = raw.decode(self.profile.encoding)
        except UnicodeDecodeError as err:
            self.reject(RejectReason.ILLEGAL_CHARACTERS, f"not {self.profile.encoding}: {err.reason}", text=repr(raw))
            return None
        return self.handle(text)


class InputEvent(Protocol):
    """The part of ``evdev.InputEvent`` the HID driver reads."""

    type: int
    code: int
    value: int


class InputDevice(Protocol):
    """The part of ``evdev.InputDevice`` the HID driver uses (the seam tests fake)."""

    def grab(self) -> None:
        """Take the device exclusively."""

    def ungrab(self) -> None:
        """Release it."""

    def close(self) -> None:
        """Close its file descriptor."""

    def async_read_loop(self) -> AsyncIterator[InputEvent]:
        """Its events; raises OSError (ENODEV) when it is unplugged."""
        ...


def open_evdev(address: str) -> InputDevice:
    """The real evdev device at ``address`` (evdev is imported here: Linux only)."""
    import evdev  # lazy: a gateway without evdev still runs serial scanners

    device: InputDevice = evdev.InputDevice(address)
    return device


class HidBarcodeDriver(ScanPipeline):
    """A keyboard-wedge scanner read through evdev, grabbed so its keystrokes reach nothing else."""

    def __init__(
        self,
        *,
        profile: BarcodeProfile,
        binding: DeviceBinding,
        settings: BarcodeSettings,
        open_device: Callable[[str], InputDevice] = open_evdev,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(profile=profile, binding=binding, settings=settings, clock=clock)
        self.profile = profile
        self._open_device = open_device
        self._device: InputDevice | None = None
        self._decoder = KeyDecoder(
            layout=profile.keyboard,
            gs_key=key_code(profile.gs_key) if profile.gs_key else None,
            max_length=profile.max_length,
        )

    async def __aenter__(self) -> Self:
        self.record.opening()
        try:
            device = self._open_device(self.binding.address)
        except (OSError, ImportError) as err:
            raise self.record.unavailable(f"cannot open {self.binding.address}: {err}") from err
        try:
            device.grab()  # EBUSY when another program holds it
        except OSError as err:
            with contextlib.suppress(OSError):
                device.close()
            raise self.record.unavailable(f"cannot grab {self.binding.address}: {err}") from err
        self._device = device
        self._decoder.reset()
        self.record.up()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        device, self._device = self._device, None
        if device is not None:
            # Both fail once the scanner is unplugged; closing must still succeed.
            with contextlib.suppress(OSError):
                device.ungrab()
            with contextlib.suppress(OSError):
                device.close()
        self.record.closed()

    async def readings(self) -> AsyncIterator[Reading]:
        """One reading per accepted scan; raises DeviceUnavailableError when the scanner is unplugged."""
        device = self._device
        if device is None:
            raise DeviceUnavailableError(f"{self.binding.address} is not open")
        try:
            async for event in device.async_read_loop():
                keyed = self._decoder.feed(event.type, event.code, event.value)
                if keyed is None:
                    continue
                if keyed.unknown_keys:
                    keys = ", ".join(str(k) for k in keyed.unknown_keys)
                    self.reject(RejectReason.ILLEGAL_CHARACTERS, f"keys without a character: {keys}", text=keyed.text)
                    continue
                reading = self.handle(keyed.text)
                if reading is not None:
                    yield reading
        except OSError as err:
            what = "unplugged" if err.errno == errno.ENODEV else f"failed: {err}"
            if self._decoder.pending:
                # The scanner went away mid-code: what arrived is not a code, and is not sent.
                self.partial_discarded_total += 1
                self.reject(RejectReason.PARTIAL, f"code cut off: scanner {what}")
            self._decoder.reset()
            raise self.record.unavailable(f"{self.binding.address} {what}") from err
        raise self.record.unavailable(f"{self.binding.address} stopped sending events")


def create(*, profile: BarcodeProfile, binding: DeviceBinding, settings: BarcodeSettings) -> Driver:
    """The driver for one scanner, by the profile's interface."""
    if profile.interface == "hid":
        return HidBarcodeDriver(profile=profile, binding=binding, settings=settings)
    return SerialBarcodeDriver(profile=profile, binding=binding, settings=settings)
