"""The tests' ESC/POS decoder against real streams and the text a reference decoder read from them.

The streams are escpos-php's integration outputs and the goldens escpos-tools' ``esc2text`` on
them (``../shared/data/escpos``, see its SOURCES.md). esc2text reads every byte as CP437
whatever ``ESC t`` selects, so the goldens are compared with code pages off; with them on,
the same stream shows the real pangrams.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from device_drivers.simulated.climate import shared_data_dir
from tests.device_drivers.printer.escpos_text import decode

SHARED = (shared_data_dir() or Path("shared/data")) / "escpos"
GOLDENS = sorted((SHARED / "decoded-text").glob("*.txt"))


def test_the_shared_goldens_are_there() -> None:
    assert len(GOLDENS) == 10, f"the ESC/POS goldens are missing under {SHARED}: see /work/shared/data/SOURCES.md"


@pytest.mark.parametrize("golden", GOLDENS, ids=[g.stem for g in GOLDENS])
def test_decoded_text_matches_the_reference_decoder(golden: Path) -> None:
    decoded = decode((SHARED / f"{golden.stem}.bin").read_bytes(), honour_code_pages=False)
    assert decoded.text + "\n" == golden.read_text(encoding="utf-8")
    assert decoded.unknown == []


def test_code_pages_decode_each_language() -> None:
    decoded = decode((SHARED / "character-encodings.bin").read_bytes())
    assert "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία" in decoded.lines  # CP737
    assert "Falsches Üben von Xylophonmusik quält jeden größeren Zwerg." in decoded.lines
    assert "Árvíztűrő tükörfúrógép." in decoded.lines  # CP852 for ű and ő
    assert any(line.startswith("Le cœur déçu mais l'âme") for line in decoded.lines)  # WPC1252 for œ


def test_barcodes_and_2d_codes_are_noted_with_their_data() -> None:
    barcodes = decode((SHARED / "barcode.bin").read_bytes()).of("barcode")
    assert {m.symbology for m in barcodes} >= {"UPC-A", "EAN13", "CODE39"}
    qr = decode((SHARED / "qr-code.bin").read_bytes()).of("qr")
    assert qr[0].data == "Testing 123"
    pdf417 = decode((SHARED / "pdf417-code.bin").read_bytes()).of("pdf417")
    assert pdf417
    assert pdf417[0].data


def test_images_and_cuts_split_the_paper() -> None:
    decoded = decode((SHARED / "receipt-with-logo.bin").read_bytes())
    assert [m.what for m in decoded.marks] == ["image", "cut"]
    (receipt,) = decoded.receipts()
    assert receipt[0] == "ExampleMart Ltd."
    assert "SALES INVOICE" in receipt


def test_gb18030_in_chinese_mode_and_status_queries_are_not_text() -> None:
    data = b"\x1b@abc\n\x10\x04\x01\x1c&" + "中文 OK".encode("gb18030") + b"\x1c.\n\x1dV\x00"
    decoded = decode(data)
    assert decoded.lines[:2] == ["abc", "中文 OK"]
    assert len(decoded.of("cut")) == 1
