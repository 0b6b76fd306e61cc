"""Reports as files people open: CSV (optionally with a byte order mark), Excel workbooks and PDF with Chinese.

A report to render is a list of :class:`Table` (a titled grid of cells) plus heading lines; each format writes
the same tables. The PDF needs a font with Chinese glyphs: :func:`find_cjk_font` takes the configured file, then
Debian's known paths, then asks fontconfig; without one the PDF still renders, in Helvetica, with a note saying
which Debian package to install (and a warning in the log), never question marks in silence.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from fontTools import subset as font_subset
from fontTools import ttLib
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import FontFace
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from hub.reports import csv_text

log = logging.getLogger(__name__)

CSV_MEDIA_TYPE: Final = "text/csv"
XLSX_MEDIA_TYPE: Final = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PDF_MEDIA_TYPE: Final = "application/pdf"
ZIP_MEDIA_TYPE: Final = "application/zip"
# Excel reads a CSV as the machine's ANSI code page unless the file starts with this.
UTF8_BOM: Final = "\ufeff"

# Where Debian's CJK font packages put their fonts, best first.
KNOWN_CJK_FONTS: Final = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),  # fonts-noto-cjk
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),  # fonts-wqy-microhei
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),  # fonts-wqy-zenhei
    Path("/usr/share/fonts/truetype/arphic/uming.ttc"),  # fonts-arphic-uming
)
FONT_PACKAGES: Final = "fonts-noto-cjk or fonts-wqy-microhei"
NO_CJK_FONT_NOTE: Final = (
    f"No font with Chinese characters was found: names outside Latin-1 are shown as '?'. "
    f"Install the Debian package {FONT_PACKAGES}, or set reports.pdf_font to a .ttf/.ttc file."
)
_FONT_SUFFIXES: Final = (".ttf", ".ttc", ".otf")
_CJK_FAMILY: Final = "cjk"
_FALLBACK_FAMILY: Final = "Helvetica"
_FC_LIST_TIMEOUT_S: Final = 5.0
_PDF_REPLACEMENTS: Final = {"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}
# Sheet names: at most 31 characters, none of these.
_SHEET_NAME_MAX: Final = 31
_SHEET_FORBIDDEN: Final = str.maketrans({c: "_" for c in "[]:*?/\\"})
# Characters a PDF may write besides its report's own text: ASCII, Latin-1 and general punctuation.
_BASE_CHARACTERS: Final = frozenset(
    chr(code) for code in (*range(0x20, 0x7F), *range(0xA0, 0x100), *range(0x2010, 0x2070))
)
# Cuts of the CJK font kept for the next reports with the same names (each some tens of KB).
_CUTS_KEPT: Final = 32
# The CJK font's one face also writes headings (fpdf2 would otherwise ask for a bold face).
_PLAIN_HEADINGS: Final = FontFace(emphasis="")


@dataclass(frozen=True, kw_only=True)
class Table:
    """A titled grid: a header row and rows of cells (text, numbers, dates; None is empty)."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True, kw_only=True)
class Document:
    """What a report says, before it becomes a file: a title, lines under it (period, zone, notes), tables."""

    title: str
    lines: Sequence[str] = ()
    tables: Sequence[Table] = field(default_factory=tuple)


# --------------------------------------------------------------------------- CSV


def csv_bytes(text: str, *, bom: bool = False) -> bytes:
    """CSV text as UTF-8 bytes, with a byte order mark first when asked (Excel then reads non-ASCII names)."""
    return ((UTF8_BOM if bom else "") + text).encode()


def table_csv(table: Table) -> str:
    """One table as CSV (cells as text; formula-like text neutralised by :func:`hub.reports.csv_text`)."""
    columns = list(table.columns)
    return csv_text(columns, (dict(zip(columns, (_text(cell) for cell in row), strict=True)) for row in table.rows))


def _text(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


# --------------------------------------------------------------------------- Excel


def _sheet_name(title: str, taken: set[str]) -> str:
    base = title.translate(_SHEET_FORBIDDEN)[:_SHEET_NAME_MAX] or "Sheet"
    name, n = base, 1
    while name.lower() in taken:
        n += 1
        suffix = f" ({n})"
        name = base[: _SHEET_NAME_MAX - len(suffix)] + suffix
    taken.add(name.lower())
    return name


def _xlsx_value(value: Any) -> Any:
    """A cell value openpyxl stores as itself: numbers and naive dates; aware times as ISO text."""
    if isinstance(value, bool | int | float | Decimal) or value is None:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value
    return str(value)


def _write_table(sheet: WriteOnlyWorksheet, table: Table, lines: Iterable[str] = ()) -> None:
    for line in lines:
        sheet.append([line])
    if lines:
        sheet.append([])
    header = []
    for column in table.columns:
        cell = WriteOnlyCell(sheet, value=column)
        cell.font = Font(bold=True)
        header.append(cell)
    sheet.append(header)
    for row in table.rows:
        cells = []
        for value in row:
            cell = WriteOnlyCell(sheet, value=_xlsx_value(value))
            if isinstance(cell.value, str):
                # openpyxl makes any text starting with "=" a formula; a name is never one.
                cell.data_type = "s"
            cells.append(cell)
        sheet.append(cells)


def workbook_bytes(sheets: Sequence[tuple[str, Table, Sequence[str]]]) -> bytes:
    """An .xlsx file with one sheet per (name, table, lines above the table); text is never a formula."""
    book = Workbook(write_only=True)
    taken: set[str] = set()
    for name, table, lines in sheets:
        sheet = book.create_sheet(_sheet_name(name, taken))
        _write_table(sheet, table, lines)
    if not sheets:
        book.create_sheet("Report").append(["no rows"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def document_workbook(document: Document) -> bytes:
    """A document as a workbook: one sheet per table, the title and lines above the first."""
    sheets = [
        (table.title, table, [document.title, *document.lines] if i == 0 else [])
        for i, table in enumerate(document.tables)
    ]
    return workbook_bytes(sheets)


# --------------------------------------------------------------------------- PDF fonts


def _fontconfig_cjk() -> Path | None:
    """A font fontconfig says covers Chinese, if fontconfig is installed."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return None
    try:
        found = subprocess.run(
            [fc_list, ":lang=zh", "file"], capture_output=True, text=True, timeout=_FC_LIST_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    files = sorted(line.strip().rstrip(":") for line in found.stdout.splitlines() if line.strip())
    for name in files:
        path = Path(name)
        if path.suffix.lower() in (".ttf", ".ttc") and path.is_file():
            return path
    return None


def find_cjk_font(configured: Path | None = None) -> Path | None:
    """The font file for Chinese text in PDFs: ``configured`` if it exists, else Debian's, else fontconfig's."""
    if configured is not None:
        if configured.is_file() and configured.suffix.lower() in _FONT_SUFFIXES:
            return configured
        log.warning("reports.pdf_font %s is not a font file; looking for an installed CJK font", configured)
    for path in KNOWN_CJK_FONTS:
        if path.is_file():
            return path
    return _fontconfig_cjk()


@functools.lru_cache(maxsize=_CUTS_KEPT)
def _cut(font: Path, modified_ns: int, characters: frozenset[str]) -> bytes:
    """``font`` cut down to ``characters``, as font file bytes; kept for the next report with the same names
    (``modified_ns`` makes a replaced font file a new key)."""
    options = font_subset.Options()
    options.notdef_outline = True
    options.recommended_glyphs = True
    options.layout_features = []  # tables of plain text need no OpenType layout
    options.drop_tables = [*options.drop_tables, "FFTM"]
    subsetter = font_subset.Subsetter(options)
    subsetter.populate(unicodes={ord(character) for character in characters})
    face = ttLib.TTFont(font, fontNumber=0, lazy=True, recalcTimestamp=False)
    subsetter.subset(face)
    out = io.BytesIO()
    face.save(out)
    return out.getvalue()


@contextlib.contextmanager
def pdf_font(font: Path | None, texts: Iterable[str]) -> Iterator[Path | None]:
    """``font`` cut down to the characters of ``texts``, as a file while the context lasts; None without a font.

    fpdf2 reads the whole of a font for every document: about half a second for a CJK font of 30,000 glyphs.
    A subset of the few hundred characters the reports use is read in milliseconds, so a bundle of many
    stores' PDFs reads the big font once, and the last few cuts are kept for reports of the same names. Should
    the cut fail, the whole font is used.
    """
    if font is None:
        yield None
        return
    characters = set(_BASE_CHARACTERS)
    for text in texts:
        characters.update(text)
    suffix = ".ttf" if font.suffix.lower() == ".ttc" else font.suffix.lower()
    with tempfile.TemporaryDirectory(prefix="storegate-pdf-font-") as folder:
        path = Path(folder) / f"subset{suffix}"
        try:
            path.write_bytes(_cut(font, font.stat().st_mtime_ns, frozenset(characters)))
        except Exception as err:  # fontTools raises many kinds for a font it cannot cut
            log.warning("cannot cut %s down for PDFs (%s); using the whole font", font, err)
            path = font
        yield path


def document_texts(document: Document) -> Iterator[str]:
    """Every text a document's PDF writes, for :func:`pdf_font`."""
    yield document.title
    yield from document.lines
    for table in document.tables:
        yield table.title
        yield from table.columns
        for row in table.rows:
            yield from (_pdf_cell(cell) for cell in row)


def latin1(text: str) -> str:
    """``text`` in the Latin-1 of the core PDF fonts: dashes and quotes made plain, anything else as '?'."""
    for character, plain in _PDF_REPLACEMENTS.items():
        text = text.replace(character, plain)
    return text.encode("latin-1", "replace").decode("latin-1")


class ReportPdf(FPDF):
    """An A4 landscape PDF that writes Chinese with a CJK font when one is found, or says it has none."""

    def __init__(self, *, font: Path | None, title: str, created: datetime) -> None:
        super().__init__(orientation="landscape", format="A4")
        self.set_creation_date(created)
        self.set_creator("Storegate hub")
        self.set_auto_page_break(auto=True, margin=12)
        self.unicode_font = False
        if font is not None:
            try:
                self.add_font(_CJK_FAMILY, "", str(font))
                self.unicode_font = True
            except Exception as err:
                log.warning("cannot use %s for PDFs (%s); install %s", font, err, FONT_PACKAGES)
        else:
            log.warning("no font with Chinese characters found for PDFs; install the Debian package %s", FONT_PACKAGES)
        self.set_title(self.text_of(title))
        self.add_page()
        if not self.unicode_font:
            self.paragraph(NO_CJK_FONT_NOTE, size=9, style="I")

    def heading_style(self) -> dict[str, Any]:
        """The table argument that keeps headings in the CJK font's one face (nothing for Helvetica)."""
        return {"headings_style": _PLAIN_HEADINGS} if self.unicode_font else {}

    def text_of(self, text: str) -> str:
        """``text`` as the font in use can write it."""
        return text if self.unicode_font else latin1(text)

    def use_font(self, *, size: float, style: str = "") -> None:
        """The CJK font (its one face: bold is drawn a point larger instead), or Helvetica."""
        if self.unicode_font:
            self.set_font(_CJK_FAMILY, "", size + (1 if "B" in style else 0))
        else:
            self.set_font(_FALLBACK_FAMILY, style, size)

    def paragraph(self, text: str, *, size: float = 10, style: str = "") -> None:
        """A paragraph."""
        self.use_font(size=size, style=style)
        self.multi_cell(0, size * 0.5, self.text_of(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def grid(self, table: Table, *, size: float = 8, widths: Sequence[int] | None = None) -> None:
        """A table with its header; ``widths`` in mm, or even columns over the page."""
        self.paragraph(table.title, size=12, style="B")
        if not table.rows:
            self.paragraph("none", size=9)
            self.ln(2)
            return
        self.use_font(size=size)
        kwargs: dict[str, Any] = {"text_align": "LEFT", "first_row_as_headings": True, **self.heading_style()}
        if widths is not None:
            kwargs |= {"col_widths": tuple(widths), "width": sum(widths)}
        with self.table(**kwargs) as grid:
            for cells in [table.columns, *table.rows]:
                row = grid.row()
                for cell in cells:
                    row.cell(self.text_of(_pdf_cell(cell)))
        self.ln(4)


def _pdf_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def document_pdf(document: Document, *, font: Path | None, created: datetime) -> bytes:
    """A document as PDF: the title, its lines, then each table (in ``font`` cut down to what it writes)."""
    with pdf_font(font, document_texts(document)) as subset:
        return _document_pdf(document, font=subset, created=created)


def _document_pdf(document: Document, *, font: Path | None, created: datetime) -> bytes:
    pdf = ReportPdf(font=font, title=document.title, created=created)
    pdf.paragraph(document.title, size=16, style="B")
    for text in document.lines:
        pdf.paragraph(text)
    pdf.ln(2)
    for table in document.tables:
        pdf.grid(table)
    return bytes(pdf.output())
