"""Documents to ESC/POS bytes: the pick list, the technician's test page and the hub's receipts.

Pure: a document's arguments (as the hub's ``print`` command carries them) and the printer's
profile in, the job's bytes out. python-escpos builds the stream (``escpos.printer.Dummy``
keeps what would be sent: its ``set``, ``barcode``, ``qr``, ``image`` and ``cut``); text is
encoded here, line by line, because the choice of code page is the profile's:

- a line any of the profile's code pages can encode is sent in the first that can (``ESC t n``
  only when it changes);
- a line with Chinese is sent as GB18030 in the printer's Chinese mode (``FS &`` ... ``FS .``)
  when the model prints it natively, else as a bitmap of the text drawn with a CJK font
  (Pillow, which python-escpos pulls in); with no such font the characters print as ``?``
  and the job's warnings say so.

Lines are wrapped at the profile's characters per line, counting Chinese characters as two.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import re
import shutil
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Final, Literal

import escpos.capabilities  # type: ignore[import-untyped]  # python-escpos ships no type hints
from escpos.printer import Dummy  # type: ignore[import-untyped]
from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from device_drivers.printer.errors import PrintJobInvalidError
from device_drivers.printer.profile import CODE_PAGE_NUMBERS, PrinterProfile

# python-escpos caches its parsed capability data in a new private temporary directory each time a process imports
# it (mkdtemp, 0700) and never removes it: an agent restarted daily would leave one in /tmp a day. It goes when the
# process ends; a directory the operator named (ESCPOS_CAPABILITIES_PICKLE_DIR) is theirs and stays.
if "ESCPOS_CAPABILITIES_PICKLE_DIR" not in os.environ:
    atexit.register(shutil.rmtree, escpos.capabilities.pickle_dir, ignore_errors=True)

ESC: Final = b"\x1b"
FS: Final = b"\x1c"
CHINESE_ON: Final = FS + b"&"  # FS &: Kanji/Chinese character mode on (GB18030 on Chinese-market models)
CHINESE_OFF: Final = FS + b"."
LF: Final = b"\n"

# Barcode and QR sizes: module width in dots and QR module size, each the largest that fits.
_BARCODE_HEIGHT: Final = 80
_QR_MODULE: Final = 6
# Code 128 modules: 11 per symbol character plus start, check and stop (13 with its two-module end bar).
_CODE128_OVERHEAD: Final = 3 * 11 + 2


def escpos_profile_known(name: str) -> bool:
    """Whether python-escpos has a capability profile of this name."""
    return name in escpos.capabilities.CAPABILITIES["profiles"]


def reprint_notice(attempt: int) -> str:
    """The first line of a copy printed again after an interrupted one."""
    return f"REPRINT (attempt {attempt}): an earlier copy was interrupted"


# --------------------------------------------------------------------------- documents


class DocumentArgs(BaseModel):
    """What every document's arguments may carry; keys a document does not use are ignored (the hub's ``lines``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    attempt: int = Field(default=1, ge=1, le=1000, description="the queue's attempt number; > 1 prints a notice")


Text = Annotated[str, Field(min_length=1, max_length=200)]


class PickList(DocumentArgs):
    """A restock task's pick list, as ``hub.inventory.apply.pick_list`` sends it."""

    document: Literal["pick_list"]
    task_id: Annotated[str, Field(min_length=1, max_length=64)]
    store_id: Text | None = None
    aisle: Text | None = None
    shelf_id: Text
    slot: int = Field(ge=0, le=1_000_000)
    sku_id: Annotated[str, Field(min_length=1, max_length=64)]
    name: Text
    quantity: int = Field(ge=0, le=1_000_000, description="how many to bring")
    level: int | None = Field(default=None, ge=0)
    capacity: int | None = Field(default=None, ge=0)
    min_quantity: int | None = Field(default=None, ge=0)
    lines: tuple[Annotated[str, Field(max_length=200)], ...] | None = Field(
        default=None, max_length=40, description="the hub's wording of the task (store time included); else built here"
    )


class TestPage(DocumentArgs):
    """A technician's test page: the model, its width and scripts, a barcode and a QR code."""

    document: Literal["test_page"]


class ReceiptItem(BaseModel):
    """One item line of a receipt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Text
    quantity: Decimal = Field(default=Decimal(1), gt=0, le=1_000_000)
    amount: Decimal = Field(description="the line's total, in the store's currency", ge=-(10**9), le=10**9)


class ReceiptTotal(BaseModel):
    """One total line (subtotal, tax, total, paid, change)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: Text
    amount: Decimal = Field(ge=-(10**9), le=10**9)


class Receipt(DocumentArgs):
    """A receipt whose lines the hub gives: a title, items, totals and free lines."""

    document: Literal["receipt"]
    title: Text | None = None
    lines: tuple[Annotated[str, Field(max_length=200)], ...] = Field(default=(), max_length=200)
    items: tuple[ReceiptItem, ...] = Field(default=(), max_length=500)
    totals: tuple[ReceiptTotal, ...] = Field(default=(), max_length=20)
    footer: tuple[Annotated[str, Field(max_length=200)], ...] = Field(default=(), max_length=20)


Document = Annotated[PickList | TestPage | Receipt, Field(discriminator="document")]
_DOCUMENT: Final[TypeAdapter[Document]] = TypeAdapter(Document)
DOCUMENTS: Final = ("pick_list", "test_page", "receipt")


def parse_document(args: Mapping[str, object]) -> Document:
    """A print command's args as a document; PrintJobInvalidError naming the first bad or missing field."""
    if args.get("document") not in DOCUMENTS:
        raise PrintJobInvalidError(f"unknown document {args.get('document')!r}; one of {', '.join(DOCUMENTS)}")
    try:
        return _DOCUMENT.validate_python(dict(args))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:]) or "args"
        raise PrintJobInvalidError(f"{args['document']}: {where}: {first['msg']}") from err


# --------------------------------------------------------------------------- text


def char_width(char: str) -> int:
    """Columns a character takes on the printer: 2 for wide (Chinese) characters, 0 for combining marks."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def text_width(text: str) -> int:
    """Columns ``text`` takes on the printer."""
    return sum(char_width(c) for c in text)


def has_wide(text: str) -> bool:
    """Whether ``text`` has wide (Chinese, Japanese, Korean) characters, which no single-byte code page has."""
    return any(char_width(c) == 2 for c in text)


# Control characters in text from the hub would be ESC/POS commands on the paper: they print as spaces.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character (ESC, GS, DLE, LF...) made a space: text never becomes a command."""
    return _CONTROL.sub(" ", text)


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` columns: at spaces, inside an over-long word, or between wide chars."""
    if text_width(text) <= width and text.isprintable():
        return [text]  # as it is, its spacing included ("Shelf 7  slot 3")
    words: list[tuple[str, bool]] = []  # (word, a space before it)
    for match in re.finditer(r"\S+", text):
        word = match.group()
        # Chinese has no spaces: each wide character may start a line, and joins its neighbours without one.
        parts = re.findall(r"[^\x00-\u2e7f]|[\x00-\u2e7f]+", word) if has_wide(word) else [word]
        words.extend((part, index == 0) for index, part in enumerate(parts))
    lines: list[str] = []
    current = ""
    for word, spaced in words:
        joiner = " " if spaced and current else ""
        while text_width(current + joiner + word) > width and text_width(word) > width - text_width(current + joiner):
            room = width - text_width(current + joiner)
            if room <= 0 or (current and text_width(word) <= width):
                lines.append(current)
                current, joiner = "", ""
                continue
            head, word = _cut(word, room)
            lines.append(current + joiner + head)
            current, joiner = "", ""
        candidate = current + joiner + word
        if text_width(candidate) <= width:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current or not lines:
        lines.append(current)
    return lines


def _cut(word: str, room: int) -> tuple[str, str]:
    used = 0
    for index, char in enumerate(word):
        used += char_width(char)
        if used > room:
            return word[:index], word[index:]
    return word, ""


def choose_code_page(text: str, code_pages: tuple[str, ...]) -> str | None:
    """The first of ``code_pages`` that encodes all of ``text``, or None."""
    for name in code_pages:
        try:
            text.encode(name)
        except UnicodeEncodeError:
            continue
        return name
    return None


def text_bitmap(text: str, font_path: Path, *, width_dots: int, size: int) -> Image.Image:
    """``text`` drawn in black on a white strip ``width_dots`` wide (1 bit a pixel), for models without its script."""
    font = ImageFont.truetype(str(font_path), size=size)
    strip = Image.new("1", (width_dots, size + size // 4), 1)
    ImageDraw.Draw(strip).text((0, size // 8), text, font=font, fill=0)
    return strip


# --------------------------------------------------------------------------- barcodes


def _gtin_ok(digits: str) -> bool:
    body, check = digits[:-1], int(digits[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


def barcode_for(sku_id: str) -> tuple[str, str] | None:
    """The symbology and data that print ``sku_id``: EAN-13/EAN-8 for a GTIN, else Code 128 B; None if unprintable."""
    if sku_id.isascii() and sku_id.isdigit() and len(sku_id) in (8, 13) and _gtin_ok(sku_id):
        return ("EAN13" if len(sku_id) == 13 else "EAN8", sku_id)
    if sku_id.isascii() and sku_id.isprintable():
        return ("CODE128", sku_id)
    return None


# --------------------------------------------------------------------------- the page


@dataclass
class _Page:
    """A job being built: python-escpos's Dummy for the commands, this profile's rules for text."""

    profile: PrinterProfile
    cjk_font: Path | None
    printer: Dummy = field(init=False)
    code_page: str | None = None
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.printer = Dummy(profile=self.profile.escpos_profile)
        self.printer.hw("INIT")  # ESC @: a known state whatever the last job left set

    @property
    def width(self) -> int:
        return self.profile.chars_per_line

    def style(self, *, align: str = "left", bold: bool = False, double: bool = False) -> None:
        self.printer.set(align=align, bold=bold, double_height=double, double_width=double, normal_textsize=not double)

    def line(self, text: str = "", *, align: str = "left", bold: bool = False, double: bool = False) -> None:
        """``text`` wrapped to the paper, in this style."""
        text = printable(text)
        self.style(align=align, bold=bold, double=double)
        for piece in wrap(text, self.width // 2 if double else self.width):
            self._emit(piece, double=double)
        if double or bold or align != "left":
            self.style()

    def pair(self, left: str, right: str, *, bold: bool = False) -> None:
        """``left`` and ``right`` on one line, ``right`` against the right edge (``left`` wrapped if need be)."""
        left, right = printable(left), printable(right)
        self.style(bold=bold)
        room = self.width - text_width(right) - 1
        pieces = wrap(left, max(room, 1))
        for piece in pieces[:-1]:
            self._emit(piece)
        last = pieces[-1]
        self._emit(last + " " * (self.width - text_width(last) - text_width(right)) + right)
        if bold:
            self.style()

    def rule(self) -> None:
        self._emit("-" * self.width)

    def _emit(self, text: str, *, double: bool = False) -> None:
        raw = self.printer._raw
        if has_wide(text):
            if self.profile.gb18030:
                raw(CHINESE_ON + text.encode("gb18030", errors="replace") + CHINESE_OFF + LF)
                return
            if self.cjk_font is not None:
                size = (2 if double else 1) * 2 * self.profile.width_dots // self.profile.chars_per_line
                self.printer.image(
                    text_bitmap(text, self.cjk_font, width_dots=self.profile.width_dots, size=size),
                    impl="bitImageRaster",
                )
                return
            warning = "Chinese text printed as '?': the printer has no GB18030 and no CJK font was found"
            if warning not in self.warnings:
                self.warnings.append(warning)
        name = choose_code_page(text, self.profile.code_pages) or self.profile.code_pages[0]
        if name != self.code_page:
            raw(ESC + b"t" + bytes([CODE_PAGE_NUMBERS[name]]))
            self.code_page = name
        raw(text.encode(name, errors="replace") + LF)

    def barcode(self, code: str) -> None:
        """``code`` as a scannable barcode (EAN for a GTIN, else Code 128) with its text below, if it fits."""
        chosen = barcode_for(code)
        if chosen is None:
            self.line(f"(no barcode: {code!r} is not printable as one)")
            return
        symbology, data = chosen
        modules = 95 + 20 if symbology != "CODE128" else len(data) * 11 + _CODE128_OVERHEAD
        module_width = next((w for w in (3, 2, 1) if modules * w <= self.profile.width_dots), None)
        if module_width is None:
            self.line(f"(no barcode: {code} is too long for the paper)")
            return
        # python-escpos prints "Using hardware barcode renderer" on stdout; the agent's stdout is for its logs.
        hardware = bool(self.printer.profile.supports("barcodeB"))
        with contextlib.redirect_stdout(io.StringIO()):
            if symbology == "CODE128" and hardware:
                # Code set B for every character; a literal '{' is "{{" (GS k 73 takes '{' as the set switch).
                self.printer.barcode(
                    "{B" + data.replace("{", "{{"),
                    "CODE128",
                    function_type="B",
                    check=False,
                    height=_BARCODE_HEIGHT,
                    width=module_width,
                    pos="BELOW",
                )
            else:  # an EAN, or a model without barcodes of its own: python-escpos draws it as an image
                self.printer.barcode(data, symbology, height=_BARCODE_HEIGHT, width=module_width, pos="BELOW")
        self.printer._raw(LF)
        self.style()

    def qr(self, content: str) -> None:
        """``content`` as a QR code, centred."""
        self.style(align="center")
        # Natively (GS ( k) where python-escpos's data says the model can; else it sends the code as an image.
        native = bool(self.printer.profile.supports("qrCode"))
        self.printer.qr(content, size=_QR_MODULE, native=native, center=not native)
        self.printer._raw(LF)
        self.style()

    def finish(self) -> bytes:
        """The job's bytes: fed past the tear bar and cut (when the model cuts)."""
        if self.profile.cutter:
            self.printer.cut()
        else:
            self.printer.print_and_feed(6)
        output: bytes = self.printer.output
        return output


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True, slots=True)
class RenderedJob:
    """A document ready to send."""

    document: str
    data: bytes
    summary: str  # e.g. "pick_list for task T"
    warnings: tuple[str, ...] = ()


# A line of each script the test page shows.
SAMPLE_LINES: Final = (
    ("English", "The quick brown fox jumps over the lazy dog"),
    ("German", "Falsches Üben von Xylophonmusik quält"),
    ("Russian", "Съешь же ещё этих мягких французских булок"),
    ("Greek", "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία"),
    ("Chinese", "中文打印测试 补货单"),
)
TEST_BARCODE: Final = "STOREGATE-TEST"
TEST_QR: Final = "storegate printer test page"


def render(
    document: Document, profile: PrinterProfile, *, cjk_font: Path | None = None, header: str | None = None
) -> RenderedJob:
    """The bytes of ``document`` on a printer of ``profile``; ``cjk_font`` draws Chinese where the model cannot."""
    page = _Page(profile=profile, cjk_font=cjk_font)
    if document.attempt > 1:
        page.line(reprint_notice(document.attempt), bold=True)
        page.rule()
    if header is not None:
        page.line(header, align="center", bold=True)
    match document:
        case PickList():
            _pick_list(page, document)
            summary = f"pick_list for task {document.task_id}"
        case TestPage():
            _test_page(page, profile)
            summary = f"test_page for {profile.id}"
        case Receipt():
            _receipt(page, document)
            summary = f"receipt{f' {document.title!r}' if document.title else ''}"
    return RenderedJob(document=document.document, data=page.finish(), summary=summary, warnings=tuple(page.warnings))


def pick_list_lines(doc: PickList) -> tuple[str, ...]:
    """The lines of a pick list the hub sent without its own: the same wording as ``hub.inventory.apply``."""
    level = ""
    if doc.level is not None and doc.capacity is not None:
        minimum = f" (min {doc.min_quantity})" if doc.min_quantity is not None else ""
        level = f"On shelf {doc.level} of {doc.capacity}{minimum}"
    return tuple(
        line
        for line in (
            "RESTOCK",
            f"Store {doc.store_id}" if doc.store_id is not None else "",
            f"Aisle {doc.aisle}" if doc.aisle is not None else "",
            f"Shelf {doc.shelf_id}  slot {doc.slot}",
            f"{doc.sku_id}  {doc.name}",
            level,
            f"BRING {doc.quantity}",
            f"Task {doc.task_id}",
        )
        if line
    )


def _pick_list(page: _Page, doc: PickList) -> None:
    # The hub's lines as they are, so the paper says what the task says; the codes come from the fields.
    lines = doc.lines or pick_list_lines(doc)
    page.line(lines[0], align="center", double=True)
    for text in lines[1:]:
        page.line(text, double=text.startswith("BRING "))
    page.barcode(doc.sku_id)
    page.qr(doc.task_id)


def _test_page(page: _Page, profile: PrinterProfile) -> None:
    page.line("PRINTER TEST PAGE", align="center", double=True)
    page.line(f"{profile.vendor} {profile.model}", bold=True)
    page.line(f"Profile {profile.id}, {profile.transport}")
    page.line(f"Paper {profile.paper_width_mm} mm, {profile.width_dots} dots, {profile.chars_per_line} chars/line")
    page.line(f"Code pages: {', '.join(profile.code_pages)}")
    chinese = "GB18030 (FS &)" if profile.gb18030 else "bitmap"
    page.line(f"Chinese: {chinese}; cutter: {'yes' if profile.cutter else 'no'}")
    page.line("1234567890" * (profile.chars_per_line // 10) + "1234567890"[: profile.chars_per_line % 10])
    page.rule()
    for script, sample in SAMPLE_LINES:
        page.line(f"{script}:", bold=True)
        page.line(sample)
    page.rule()
    page.barcode(TEST_BARCODE)
    page.qr(TEST_QR)


def _amount(value: Decimal) -> str:
    return f"{value:.2f}"


def _receipt(page: _Page, doc: Receipt) -> None:
    if doc.title is not None:
        page.line(doc.title, align="center", bold=True)
    for text in doc.lines:
        page.line(text)
    if doc.items:
        page.rule()
    for item in doc.items:
        quantity = f"{item.quantity.normalize():f} x " if item.quantity != 1 else ""
        page.pair(f"{quantity}{item.name}", _amount(item.amount))
    if doc.totals:
        page.rule()
    for total in doc.totals:
        page.pair(total.label, _amount(total.amount), bold=True)
    for text in doc.footer:
        page.line(text, align="center")
