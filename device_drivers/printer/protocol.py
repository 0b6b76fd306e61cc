"""ESC/POS real-time status (DLE EOT): the queries, and the pure parsing of their one-byte answers.

The Epson ESC/POS reference defines four status bytes, each asked for with ``DLE EOT n``
(``10 04 n``) and answered at once, even while the printer is offline or busy:

- n = 1, printer status: bit 2 drawer kick-out pin 3 high, bit 3 offline, bit 5 waiting for
  online recovery, bit 6 paper being fed by the FEED button;
- n = 2, offline cause: bit 2 cover open, bit 3 paper fed by the FEED button, bit 5 printing
  stopped by paper end, bit 6 an error occurred;
- n = 3, error cause: bit 2 recoverable error, bit 3 autocutter error, bit 5 unrecoverable
  error, bit 6 automatically recoverable error (head too hot, say);
- n = 4, roll paper sensor: bits 2 and 3 paper near its end, bits 5 and 6 paper not present.

In every answer bits 1 and 4 are 1 and bits 0 and 7 are 0 (``0x12`` with nothing to report):
that is how an answer is told from stray bytes, and a byte without them is a ProtocolError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from device_drivers.base import ProtocolError
from storegate.wire import PrinterStatus

DLE: Final = b"\x10"
EOT: Final = b"\x04"

# The query of each status byte.
STATUS_QUERY: Final[dict[int, bytes]] = {n: DLE + EOT + bytes([n]) for n in (1, 2, 3, 4)}

_FIXED_MASK: Final = 0x93  # bits 0, 1, 4, 7
_FIXED_VALUE: Final = 0x12  # bits 1 and 4 set

# Bit -> flag, per status byte: a table, so each bit's meaning is stated once.
PRINTER_BITS: Final[dict[int, str]] = {
    0x04: "drawer_pin_high",
    0x08: "offline",
    0x20: "waiting_recovery",
    0x40: "feed_button",
}
OFFLINE_BITS: Final[dict[int, str]] = {0x04: "cover_open", 0x08: "feeding", 0x20: "paper_end_stop", 0x40: "error"}
ERROR_BITS: Final[dict[int, str]] = {
    0x04: "recoverable_error",
    0x08: "autocutter_error",
    0x20: "unrecoverable_error",
    0x40: "auto_recoverable_error",
}
PAPER_NEAR_END: Final = 0x0C
PAPER_NOT_PRESENT: Final = 0x60

# Each error flag in words, for the status payload's ``error``.
ERROR_WORDS: Final[dict[str, str]] = {
    "recoverable_error": "recoverable error",
    "autocutter_error": "autocutter error",
    "unrecoverable_error": "unrecoverable error (power cycle the printer)",
    "auto_recoverable_error": "print head overheated",
}

Paper = Literal["ok", "low", "out", "unknown"]


def check_status_byte(n: int, value: int) -> int:
    """``value`` if it has the fixed bits of a DLE EOT answer, else ProtocolError naming the query."""
    if not 0 <= value <= 0xFF or value & _FIXED_MASK != _FIXED_VALUE:
        raise ProtocolError(f"answer 0x{value:02x} to DLE EOT {n} is no status byte (bits 1, 4 set, 0, 7 clear)")
    return value


def flags(n: int, value: int, table: dict[int, str]) -> frozenset[str]:
    """The flags of status byte ``n`` that ``value`` has set (ProtocolError for a byte that is not an answer)."""
    check_status_byte(n, value)
    return frozenset(name for bit, name in table.items() if value & bit)


def paper_of(value: int) -> Paper:
    """The roll paper sensor byte (DLE EOT 4) as ok, low or out; any bit of a sensor pair counts."""
    check_status_byte(4, value)
    if value & PAPER_NOT_PRESENT:
        return "out"
    if value & PAPER_NEAR_END:
        return "low"
    return "ok"


@dataclass(frozen=True, slots=True)
class PrinterState:
    """What the printer's status bytes say, together."""

    online: bool
    paper: Paper
    cover_open: bool | None
    errors: frozenset[str] = frozenset()

    @property
    def not_ready_reason(self) -> str | None:
        """Why a job must not be sent now (paper out, cover open, offline, an error), or None when it may."""
        reasons = [
            *(["paper out"] if self.paper == "out" else []),
            *(["cover open"] if self.cover_open else []),
            *sorted(ERROR_WORDS[e] for e in self.errors if e in ERROR_WORDS),
        ]
        if not reasons and not self.online:
            reasons.append("offline")
        return ", ".join(reasons) or None

    def to_wire(self) -> PrinterStatus:
        """The ``printer.status`` payload."""
        error = ", ".join(sorted(ERROR_WORDS[e] for e in self.errors if e in ERROR_WORDS)) or None
        return PrinterStatus(online=self.online, paper=self.paper, cover_open=self.cover_open, error=error)


def parse_status(printer: int, offline: int, paper: int, error: int | None = None) -> PrinterState:
    """The printer's state from its answers to DLE EOT 1, 2, 4 (and 3, asked only when byte 2 says an error)."""
    printer_flags = flags(1, printer, PRINTER_BITS)
    offline_flags = flags(2, offline, OFFLINE_BITS)
    error_flags = flags(3, error, ERROR_BITS) if error is not None else frozenset()
    paper_state = paper_of(paper)
    if paper_state != "out" and "paper_end_stop" in offline_flags:
        paper_state = "out"  # the roll sensor may be absent; the printer still says it stopped at the paper's end
    return PrinterState(
        online="offline" not in printer_flags,
        paper=paper_state,
        cover_open="cover_open" in offline_flags,
        errors=error_flags,
    )
