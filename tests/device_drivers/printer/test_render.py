"""Rendering documents to ESC/POS, read back with the tests' decoder: what the paper would show."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from device_drivers.printer.errors import PrintJobInvalidError
from device_drivers.printer.fonts import find_cjk_font
from device_drivers.printer.profile import PrinterProfile
from device_drivers.printer.render import (
    TEST_BARCODE,
    TEST_QR,
    barcode_for,
    choose_code_page,
    parse_document,
    render,
    reprint_notice,
    text_width,
    wrap,
)
from device_drivers.profiles import load_catalog
from hub.inventory.apply import LevelReport
from hub.inventory.apply import pick_list as hub_pick_list
from hub.inventory.catalog_view import CatalogSnapshot, SlotPlan
from tests.device_drivers.printer.escpos_text import Decoded, decode

# A font Pillow can draw with on any test machine: it has no Chinese, but the bitmap path is the same.
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def shipped(profile_id: str) -> PrinterProfile:
    profile = load_catalog().get(profile_id)
    assert isinstance(profile, PrinterProfile)
    return profile


def pick_list(**changes: Any) -> dict[str, Any]:
    """A pick list as the hub's own ``pick_list()`` makes it for a restock task, with ``changes``."""
    report = LevelReport(
        store_id="s-001",
        shelf_id="shelf-7",
        slot=3,
        quantity=2,
        at=datetime(2026, 12, 6, 15, 30, tzinfo=UTC),
        event_id="ev-1",
        gateway_id="gw-1",
    )
    plan = SlotPlan(sku_id="MILK-1L", capacity=12, min_quantity=4)
    catalog = CatalogSnapshot(sku_names={"MILK-1L": "Whole milk 1 l, organic, from the farm down the road"})
    args: dict[str, Any] = hub_pick_list(changes.pop("task_id", "rt-00042"), report, plan, catalog)
    if "name" in changes or "sku_id" in changes:
        args.pop("lines")  # the hub's lines name the old SKU: let the printer word the changed one
    return args | changes


TASK_LINES = [
    "Store s-001  2026-12-06 15:30",
    "Shelf shelf-7  slot 3",
    "On shelf 2 of 12 (min 4)",
    "Task rt-00042",
]


def printed(args: dict[str, Any], profile_id: str = "epson-tm-t20", **kwargs: Any) -> Decoded:
    job = render(parse_document(args), shipped(profile_id), **kwargs)
    return decode(job.data)


def test_pick_list_shows_the_task_with_a_barcode_and_a_qr_code() -> None:
    paper = printed(pick_list())
    assert paper.lines[0] == "RESTOCK"
    for line in TASK_LINES:
        assert line in paper.lines
    assert "MILK-1L Whole milk 1 l, organic, from the farm" in paper.lines  # wrapped at 48 columns
    assert "down the road" in paper.lines
    assert "BRING 10" in paper.lines
    assert [(m.symbology, m.data) for m in paper.of("barcode")] == [("CODE128", "MILK-1L")]
    assert [m.data for m in paper.of("qr")] == ["rt-00042"]
    assert len(paper.receipts()) == 1  # cut once, at the end
    assert all(text_width(line) <= 48 for line in paper.lines)


def test_without_the_hubs_lines_the_printer_words_them_the_same_way() -> None:
    args = pick_list()
    hub_lines = args.pop("lines")
    paper = printed(args)
    assert paper.lines[:3] == ["RESTOCK", "Store s-001", "Shelf shelf-7  slot 3"]  # the store's time is the hub's
    for line in hub_lines[4:]:
        assert line in paper.lines
    assert "Aisle 4" in printed(args | {"aisle": "4"}).lines


def test_control_characters_never_become_commands() -> None:
    paper = printed(pick_list(lines=["RESTOCK", "evil \x1bd\x09\x1dV\x00 cut", "Task x"]))
    assert "evil  d  V  cut" in paper.lines  # ESC, HT, GS and NUL print as spaces
    assert len(paper.of("cut")) == 1  # only the job's own


def test_a_gtin_prints_as_ean13_and_a_brace_survives_code128() -> None:
    assert barcode_for("4006381333931") == ("EAN13", "4006381333931")
    assert barcode_for("4006381333932") == ("CODE128", "4006381333932")  # bad check digit: not a GTIN
    assert barcode_for("96385074") == ("EAN8", "96385074")
    assert barcode_for("牛奶") is None
    paper = printed(pick_list(sku_id="4006381333931"))
    assert [(m.symbology, m.data) for m in paper.of("barcode")] == [("EAN13", "4006381333931")]
    assert [m.data for m in printed(pick_list(sku_id="A{B}")).of("barcode")] == ["A{B}"]


def test_58mm_paper_wraps_at_32_columns() -> None:
    paper = printed(pick_list(), "generic-58mm")
    assert all(text_width(line) <= 32 for line in paper.lines)
    assert "MILK-1L Whole milk 1 l, organic," in paper.lines
    assert paper.of("cut") == []  # a tear bar, no cutter


def test_a_reprint_says_so_first() -> None:
    paper = printed(pick_list(attempt=3))
    assert " ".join(paper.lines[:2]) == reprint_notice(3)
    assert "REPRINT" not in printed(pick_list(attempt=1)).text


def test_chinese_is_gb18030_on_a_chinese_model() -> None:
    paper = printed(pick_list(name="全脂牛奶 1升"), "generic-58mm")
    assert "MILK-1L  全脂牛奶 1升" in paper.lines
    # No bitmap for the text: the images are the barcode and QR code this model cannot draw itself.
    assert len(paper.of("image")) == len(printed(pick_list(), "generic-58mm").of("image"))
    assert paper.of("barcode") == paper.of("qr") == []


def test_chinese_is_a_bitmap_on_other_models(tmp_path: Path) -> None:
    profile = shipped("epson-tm-t20")
    job = render(parse_document(pick_list(name="全脂牛奶")), profile, cjk_font=DEJAVU)
    paper = decode(job.data)
    assert "全脂牛奶" not in paper.text
    (image,) = paper.of("image")
    assert image.data.startswith(f"{profile.width_dots}x")
    assert job.warnings == ()


def test_chinese_without_a_font_prints_question_marks_and_says_so() -> None:
    job = render(parse_document(pick_list(name="全脂牛奶")), shipped("epson-tm-t20"), cjk_font=None)
    assert "MILK-1L  ????" in decode(job.data).lines
    assert job.warnings == ("Chinese text printed as '?': the printer has no GB18030 and no CJK font was found",)


def test_other_scripts_take_the_first_code_page_that_has_them() -> None:
    assert choose_code_page("Grüße", ("cp437", "cp858")) == "cp437"
    assert choose_code_page("5 €", ("cp437", "cp858")) == "cp858"
    assert choose_code_page("Привет", ("cp437", "cp858")) is None
    paper = printed({"document": "receipt", "lines": ["Grüße 5 €", "Привет", "Ελληνικά"]})
    assert paper.lines[:3] == ["Grüße 5 €", "Привет", "Ελληνικά"]


def test_test_page_shows_the_model_its_scripts_and_codes() -> None:
    profile = shipped("epson-tm-t20")
    paper = printed({"document": "test_page"}, cjk_font=DEJAVU)
    text = paper.text
    assert "Seiko Epson TM-T20" in text
    assert "Paper 80 mm, 576 dots, 48 chars/line" in text
    assert f"Code pages: {', '.join(profile.code_pages)}" in text
    assert "Falsches Üben von Xylophonmusik quält" in text
    assert "Съешь же ещё этих мягких французских булок" in text
    assert "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία" in text
    assert len(paper.of("image")) == 1  # the Chinese line, as a bitmap
    assert [m.data for m in paper.of("barcode")] == [TEST_BARCODE]
    assert [m.data for m in paper.of("qr")] == [TEST_QR]
    chinese = printed({"document": "test_page"}, "generic-58mm")
    assert "中文打印测试 补货单" in chinese.lines


def test_receipt_lines_items_and_totals() -> None:
    args = {
        "document": "receipt",
        "title": "Storegate s-001",
        "lines": ["Till 2, 2026-12-06 16:30"],
        "items": [
            {"name": "Apples", "quantity": "2", "amount": "3.40"},
            {"name": "A very long product name that will not fit on one line", "amount": "1.05"},
        ],
        "totals": [{"label": "TOTAL", "amount": "4.45"}],
        "footer": ["Thank you"],
    }
    paper = printed(args, header="Corner Shop")
    assert paper.lines[0] == "Corner Shop"
    assert "2 x Apples" + " " * 34 + "3.40" in paper.lines
    assert "A very long product name that will not fit" in paper.lines  # the amount's column stays free
    assert "on one line" + " " * 33 + "1.05" in paper.lines
    assert "TOTAL" + " " * 39 + "4.45" in paper.lines
    assert "Thank you" in paper.lines


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"document": "poster"}, "unknown document 'poster'"),
        ({}, "unknown document None"),
        ({"document": "pick_list", "task_id": "t"}, "pick_list: shelf_id: Field required"),
        (pick_list(quantity=-1), "pick_list: quantity: Input should be greater than or equal to 0"),
        (pick_list(attempt=0), "pick_list: attempt"),
        ({"document": "receipt", "items": [{"name": "x", "amount": "abc"}]}, "receipt: items.0.amount"),
    ],
)
def test_bad_arguments_are_an_invalid_job(args: dict[str, Any], message: str) -> None:
    with pytest.raises(PrintJobInvalidError, match=message):
        parse_document(args)
    assert PrintJobInvalidError.retryable is False


@pytest.mark.parametrize(
    ("text", "width", "lines"),
    [
        ("", 10, [""]),
        ("one two three", 7, ["one two", "three"]),
        ("abcdefghijklmnop", 6, ["abcdef", "ghijkl", "mnop"]),
        ("中文打印测试", 5, ["中文", "打印", "测试"]),  # two columns a character
        ("Milk 牛奶 fresh", 9, ["Milk 牛奶", "fresh"]),
    ],
)
def test_wrap_counts_columns(text: str, width: int, lines: list[str]) -> None:
    assert wrap(text, width) == lines


def test_cjk_font_from_fontconfig_else_common_paths(tmp_path: Path) -> None:
    font = tmp_path / "wqy.ttc"
    font.write_bytes(b"font")
    assert find_cjk_font(run=lambda argv: f"{font}: \n", candidates=()) == font
    assert find_cjk_font(run=lambda argv: "", candidates=(tmp_path / "absent.ttf", font)) == font

    def no_fontconfig(argv: object) -> str:
        raise FileNotFoundError("fc-list")

    assert find_cjk_font(run=no_fontconfig, candidates=(tmp_path / "absent.ttf",)) is None
