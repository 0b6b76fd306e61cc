"""DLE EOT status bytes, bit by bit, as the Epson ESC/POS reference defines them."""

from __future__ import annotations

import pytest

from device_drivers.base import ProtocolError
from device_drivers.printer.protocol import (
    ERROR_BITS,
    OFFLINE_BITS,
    PRINTER_BITS,
    STATUS_QUERY,
    PrinterState,
    check_status_byte,
    flags,
    paper_of,
    parse_status,
)

BASE = 0x12  # bits 1 and 4 set: nothing to report


def test_queries_are_dle_eot_n() -> None:
    assert STATUS_QUERY == {1: b"\x10\x04\x01", 2: b"\x10\x04\x02", 3: b"\x10\x04\x03", 4: b"\x10\x04\x04"}


@pytest.mark.parametrize(
    ("n", "table", "bit", "flag"),
    [
        (1, PRINTER_BITS, 0x04, "drawer_pin_high"),
        (1, PRINTER_BITS, 0x08, "offline"),
        (1, PRINTER_BITS, 0x20, "waiting_recovery"),
        (1, PRINTER_BITS, 0x40, "feed_button"),
        (2, OFFLINE_BITS, 0x04, "cover_open"),
        (2, OFFLINE_BITS, 0x08, "feeding"),
        (2, OFFLINE_BITS, 0x20, "paper_end_stop"),
        (2, OFFLINE_BITS, 0x40, "error"),
        (3, ERROR_BITS, 0x04, "recoverable_error"),
        (3, ERROR_BITS, 0x08, "autocutter_error"),
        (3, ERROR_BITS, 0x20, "unrecoverable_error"),
        (3, ERROR_BITS, 0x40, "auto_recoverable_error"),
    ],
)
def test_each_bit_sets_its_flag_alone(n: int, table: dict[int, str], bit: int, flag: str) -> None:
    assert flags(n, BASE, table) == frozenset()
    assert flags(n, BASE | bit, table) == {flag}


@pytest.mark.parametrize(
    ("value", "paper"),
    [
        (BASE, "ok"),
        (BASE | 0x04, "low"),  # either near-end sensor bit
        (BASE | 0x08, "low"),
        (BASE | 0x0C, "low"),
        (BASE | 0x20, "out"),  # either paper-end sensor bit
        (BASE | 0x40, "out"),
        (BASE | 0x60, "out"),
        (BASE | 0x6C, "out"),  # out wins over low
    ],
)
def test_paper_sensor_bits(value: int, paper: str) -> None:
    assert paper_of(value) == paper


@pytest.mark.parametrize(
    "value",
    [0x00, 0x13, 0x92, 0x02, 0x10, 0xFF, 0x100],
    ids=["zero", "bit0-set", "bit7-set", "bit4-clear", "bit1-clear", "all", "not-a-byte"],
)
def test_a_byte_without_the_fixed_bits_is_not_a_status_answer(value: int) -> None:
    with pytest.raises(ProtocolError, match="to DLE EOT 2 is no status byte"):
        check_status_byte(2, value)


def test_a_ready_printer() -> None:
    state = parse_status(BASE, BASE, BASE)
    assert state == PrinterState(online=True, paper="ok", cover_open=False)
    assert state.not_ready_reason is None
    assert state.to_wire().model_dump() == {"online": True, "paper": "ok", "cover_open": False, "error": None}


def test_paper_out_cover_open_and_offline_say_why() -> None:
    paper_out = parse_status(BASE | 0x08, BASE | 0x20, BASE | 0x60)
    assert (paper_out.online, paper_out.paper) == (False, "out")
    assert paper_out.not_ready_reason == "paper out"
    cover = parse_status(BASE | 0x08, BASE | 0x04, BASE)
    assert cover.cover_open
    assert cover.not_ready_reason == "cover open"
    offline = parse_status(BASE | 0x08, BASE, BASE)
    assert offline.not_ready_reason == "offline"
    low = parse_status(BASE, BASE, BASE | 0x0C)
    assert low.paper == "low"
    assert low.not_ready_reason is None  # low paper still prints


def test_paper_end_stop_without_a_roll_sensor_is_paper_out() -> None:
    assert parse_status(BASE | 0x08, BASE | 0x20, BASE).paper == "out"


def test_errors_come_from_byte_3_in_words() -> None:
    state = parse_status(BASE | 0x08, BASE | 0x40, BASE, BASE | 0x08 | 0x40)
    assert state.errors == {"autocutter_error", "auto_recoverable_error"}
    assert state.to_wire().error == "autocutter error, print head overheated"
    assert state.not_ready_reason == "autocutter error, print head overheated"
