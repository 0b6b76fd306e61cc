"""An ESC/POS decoder for the tests: bytes back to what the paper shows.

Written from the Epson ESC/POS command reference, separately from the driver and the emulator,
so a test that decodes a job checks the driver's bytes against an independent reading of them.
It walks the stream command by command: printable bytes are text in the current code page
(``ESC t n``), or GB18030 while Chinese mode is on (``FS &`` ... ``FS .``); ``LF`` ends a
line; commands that change only the look (bold, size, alignment, margins) are skipped with
their arguments; a barcode (``GS k``), a 2D code (``GS ( k``), a bitmap (``GS v 0``,
``ESC *``, ``GS ( L``) or a cut (``GS V``) is noted in order beside the text; real-time
status queries (``DLE EOT n``) are not print data.

``honour_code_pages=False`` decodes every byte as CP437 whatever ``ESC t`` says, which is what
the reference decoder of the shared goldens (escpos-tools ``esc2text``) does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

ESC: Final = 0x1B
GS: Final = 0x1D
FS: Final = 0x1C
DLE: Final = 0x10
LF: Final = 0x0A
CR: Final = 0x0D
HT: Final = 0x09
FF: Final = 0x0C

# ESC t n -> Python codec (Epson's table numbers; the ones Python has a codec for).
CODE_PAGES: Final[dict[int, str]] = {
    0: "cp437",
    2: "cp850",
    3: "cp860",
    4: "cp863",
    5: "cp865",
    13: "cp857",
    14: "cp737",
    15: "iso8859_7",
    16: "cp1252",
    17: "cp866",
    18: "cp852",
    19: "cp858",
    33: "cp775",
    34: "cp855",
    35: "cp861",
    36: "cp862",
    37: "cp864",
    38: "cp869",
    39: "iso8859_2",
    40: "iso8859_15",
    45: "cp1250",
    46: "cp1251",
    47: "cp1253",
    48: "cp1254",
    49: "cp1255",
    50: "cp1256",
    51: "cp1257",
    52: "cp1258",
}

# Fixed-length commands that only change the look: ESC x / GS x -> how many argument bytes follow.
ESC_ARGS: Final[dict[int, int]] = {
    ord(c): n
    for c, n in {
        " ": 1, "!": 1, "$": 2, "%": 1, "-": 1, "2": 0, "3": 1, "<": 0, "=": 1, "?": 1, "D": 0, "E": 1,
        "G": 1, "J": 1, "L": 0, "M": 1, "R": 1, "S": 0, "T": 1, "U": 1, "V": 1, "W": 8, "\\": 2, "a": 1,
        "c": 2, "i": 0, "m": 0, "p": 3, "r": 1, "{": 1, "u": 1, "v": 0,
    }.items()
}  # fmt: skip
GS_ARGS: Final[dict[int, int]] = {
    ord(c): n
    for c, n in {
        "!": 1, "$": 2, "*": 2, "/": 1, ":": 0, "B": 1, "H": 1, "I": 1, "L": 2, "P": 2, "T": 1, "W": 2,
        "\\": 2, "^": 3, "a": 1, "b": 1, "f": 1, "h": 1, "r": 1, "w": 1,
    }.items()
}  # fmt: skip

BARCODE_NAMES: Final[dict[int, str]] = {
    0: "UPC-A", 1: "UPC-E", 2: "EAN13", 3: "EAN8", 4: "CODE39", 5: "ITF", 6: "CODABAR",
    65: "UPC-A", 66: "UPC-E", 67: "EAN13", 68: "EAN8", 69: "CODE39", 70: "ITF", 71: "CODABAR",
    72: "CODE93", 73: "CODE128",
}  # fmt: skip


@dataclass(frozen=True)
class Mark:
    """Something printed that is not text: a barcode, a 2D code, an image or a cut, after ``line`` text lines."""

    what: str  # "barcode", "qr", "pdf417", "image", "cut"
    line: int
    data: str = ""
    symbology: str = ""


@dataclass
class Decoded:
    """What the paper shows: its text lines, and the marks between them."""

    lines: list[str] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # commands the decoder does not know (stepped over)

    @property
    def text(self) -> str:
        """The lines joined, one per line."""
        return "\n".join(self.lines)

    def of(self, what: str) -> list[Mark]:
        """The marks of one kind, in order."""
        return [m for m in self.marks if m.what == what]

    def receipts(self) -> list[list[str]]:
        """The text lines of each piece of paper cut off (the output after the last cut is not one)."""
        pieces: list[list[str]] = []
        start = 0
        for cut in self.of("cut"):
            pieces.append(self.lines[start : cut.line])
            start = cut.line
        return pieces


def _gb18030_length(data: bytes, i: int) -> int:
    """Bytes of the GB18030 character at ``i`` (1, 2 or 4)."""
    first = data[i]
    if first < 0x81 or first == 0xFF:
        return 1
    if i + 1 < len(data) and 0x30 <= data[i + 1] <= 0x39:
        return 4
    return 2


class _Decoder:
    def __init__(self, data: bytes, honour_code_pages: bool) -> None:
        self.data = data
        self.honour = honour_code_pages
        self.out = Decoded()
        self.line = bytearray()
        self.line_text = ""
        self.codec = "cp437"
        self.chinese = False
        self.qr_data: dict[int, bytes] = {}

    # ------------------------------------------------------------- text

    def _flush_bytes(self) -> None:
        if not self.line:
            return
        raw = bytes(self.line)
        self.line.clear()
        if self.chinese:
            self.line_text += raw.decode("gb18030", errors="replace")
        else:
            self.line_text += raw.decode(self.codec if self.honour else "cp437", errors="replace")

    def end_line(self) -> None:
        self._flush_bytes()
        self.out.lines.append(self.line_text)
        self.line_text = ""

    def mark(self, what: str, data: str = "", symbology: str = "") -> None:
        self._flush_bytes()
        self.out.marks.append(Mark(what=what, line=len(self.out.lines), data=data, symbology=symbology))

    # ------------------------------------------------------------- the walk

    def run(self) -> Decoded:
        data = self.data
        i = 0
        while i < len(data):
            byte = data[i]
            if byte == ESC:
                i = self._esc(i)
            elif byte == GS:
                i = self._gs(i)
            elif byte == FS:
                i = self._fs(i)
            elif byte == DLE:
                i += 3 if i + 1 < len(data) and data[i + 1] == 0x04 else 1
            elif byte == LF:
                self.end_line()
                i += 1
            elif byte in (CR, 0x00):
                i += 1
            elif byte == FF:
                self.end_line()
                i += 1
            elif self.chinese:
                size = _gb18030_length(data, i)
                self.line += data[i : i + size]
                i += size
            elif byte == HT:
                self.line += b" "
                i += 1
            else:
                self.line += bytes([byte])
                i += 1
        self._flush_bytes()
        if self.line_text:
            self.out.lines.append(self.line_text)
        return self.out

    def _esc(self, i: int) -> int:
        data = self.data
        if i + 1 >= len(data):
            return i + 1
        command = data[i + 1]
        if command == ord("@"):
            self._flush_bytes()
            self.codec, self.chinese = "cp437", False
            return i + 2
        if command == ord("t") and i + 2 < len(data):
            self._flush_bytes()
            self.codec = CODE_PAGES.get(data[i + 2], "cp437")
            return i + 3
        if command in (ord("d"), ord("e")) and i + 2 < len(data):
            # Print and feed (or reverse feed) n lines: one line break, as the reference decoder writes it.
            self.end_line()
            return i + 3
        if command == ord("*") and i + 4 < len(data):  # bit image: m nL nH, 1 or 3 bytes a column
            columns = data[i + 3] | data[i + 4] << 8
            self.mark("image")
            return i + 5 + columns * (1 if data[i + 2] in (0, 1) else 3)
        if command in ESC_ARGS:
            return i + 2 + ESC_ARGS[command]
        self.out.unknown.append(f"ESC {command:#04x}")
        return i + 2

    def _gs(self, i: int) -> int:
        data = self.data
        if i + 1 >= len(data):
            return i + 1
        command = data[i + 1]
        if command == ord("V"):  # cut: GS V m, or GS V m n for m >= 65 (feed then cut)
            m = data[i + 2] if i + 2 < len(data) else 0
            self.end_line()  # the cut prints what is buffered and feeds: a line break, as the reference decoder has
            self.mark("cut")
            return i + (4 if m >= 65 else 3)
        if command == ord("v") and i + 7 < len(data):  # GS v 0 m xL xH yL yH: raster image
            width = data[i + 4] | data[i + 5] << 8
            height = data[i + 6] | data[i + 7] << 8
            self.mark("image", data=f"{width * 8}x{height}")
            return i + 8 + width * height
        if command == ord("(") and i + 4 < len(data):
            return self._gs_paren(i)
        if command == ord("8") and i + 6 < len(data) and data[i + 2] == ord("L"):  # GS 8 L: 4 length bytes
            self.mark("image")
            return i + 7 + int.from_bytes(data[i + 3 : i + 7], "little")
        if command == ord("k") and i + 2 < len(data):
            return self._barcode(i)
        if command in GS_ARGS:
            return i + 2 + GS_ARGS[command]
        self.out.unknown.append(f"GS {command:#04x}")
        return i + 2

    def _gs_paren(self, i: int) -> int:
        data = self.data
        function = data[i + 2]
        size = data[i + 3] | data[i + 4] << 8
        body = data[i + 5 : i + 5 + size]
        end = i + 5 + size
        if function == ord("k") and len(body) >= 2:  # 2D codes: cn fn [m] data
            cn, fn = body[0], body[1]
            if fn == 80 and len(body) >= 3:  # store the data (after m)
                self.qr_data[cn] = body[3:]
            elif fn == 81:  # print the stored symbol
                kind = {49: "qr", 48: "pdf417"}.get(cn, "2d")
                self.mark(kind, data=self.qr_data.get(cn, b"").decode("utf-8", errors="replace"))
        elif function == ord("L") and len(body) >= 2 and body[1] in (2, 50):  # graphics: print the buffer
            self.mark("image")
        return end

    def _barcode(self, i: int) -> int:
        data = self.data
        m = data[i + 2]
        if m <= 6:
            end = data.find(b"\x00", i + 3)
            end = len(data) if end < 0 else end
            payload, after = data[i + 3 : end], end + 1
        else:
            n = data[i + 3] if i + 3 < len(data) else 0
            payload, after = data[i + 4 : i + 4 + n], i + 4 + n
        text = payload.decode("latin-1")
        if m == 73 and text.startswith("{"):  # Code 128: "{B" selects a code set, "{{" is a literal '{'
            text = text[2:].replace("{{", "{")
        self.mark("barcode", data=text, symbology=BARCODE_NAMES.get(m, str(m)))
        return after

    def _fs(self, i: int) -> int:
        data = self.data
        if i + 1 >= len(data):
            return i + 1
        command = data[i + 1]
        if command == ord("&"):
            self._flush_bytes()
            self.chinese = True
            return i + 2
        if command == ord("."):
            self._flush_bytes()
            self.chinese = False
            return i + 2
        if command == ord("p"):  # print NV bit image n m
            self.mark("image")
            return i + 4
        if command in (ord("!"), ord("-"), ord("W")):
            return i + 3
        if command == ord("C"):
            return i + 3
        self.out.unknown.append(f"FS {command:#04x}")
        return i + 2


def decode(data: bytes, *, honour_code_pages: bool = True) -> Decoded:
    """What printing ``data`` shows: text lines, barcodes, 2D codes, images and cuts."""
    return _Decoder(data, honour_code_pages).run()
