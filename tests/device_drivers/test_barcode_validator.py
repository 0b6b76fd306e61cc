"""The pure barcode validator: real decoded barcodes (zxing-cpp samples), GS1, in-store codes, fuzzing."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from device_drivers.barcode.gs1 import parse_gs1
from device_drivers.barcode.profile import (
    DEFAULT_VARIABLE_MEASURE,
    BarcodeProfile,
    BarcodeSettings,
    VariableMeasureRule,
)
from device_drivers.barcode.scan import KIND_OF_MODE, DecodeOptions, DoubleReadFilter, decode
from device_drivers.barcode.symbology import (
    ALL_SYMBOLOGIES,
    GS,
    BarcodeRejectedError,
    RejectReason,
    SymbologyName,
    classify,
)
from device_drivers.simulated.climate import shared_data_dir
from storegate.wire import PAYLOAD_MODELS
from tests.clocks import FakeClock

ZXING_FILE = Path("barcodes") / "zxing_expected_texts.csv"
OPTIONS = DecodeOptions(variable_measure=DEFAULT_VARIABLE_MEASURE)

# What a scanner programmed for AIM ids sends for each zxing sample set, when the row has no
# identifier of its own, and what the gateway must make of it (None: rejected).
EXPECTED_OF_SET: dict[str, tuple[str, str | None]] = {
    "ean13-1": ("]E0", "ean13"),
    "ean8-1": ("]E4", "ean8"),
    "upca-1": ("]E0", "upca"),
    "upce-1": ("]E0", "upce"),
    "code128-1": ("]C0", "code128"),
    "qrcode-1": ("]Q1", None),
    "itf-1": ("]I0", None),
}


def zxing_rows() -> list[Any]:
    """Every row of the shared zxing file, or one marker that makes each test fail when it is missing."""
    folder = shared_data_dir()
    path = None if folder is None else folder / ZXING_FILE
    if path is None or not path.is_file():
        return [pytest.param(None, id="zxing-data-missing")]
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [pytest.param(row, id=f"{row['set']}:{row['sample']}") for row in rows]


def scanner_text(row: dict[str, str] | None) -> tuple[str, str, str | None]:
    """(text the scanner sends, its AIM id, expected symbology) for one row."""
    if row is None:
        pytest.fail(f"shared data file {ZXING_FILE} is missing: set STOREGATE_SHARED_DATA or restore /work/shared/data")
    default_aim, expected = EXPECTED_OF_SET[row["set"]]
    meta = dict(part.split("=", 1) for part in row["result_meta"].split(";") if "=" in part)
    aim = meta.get("symbologyIdentifier", default_aim)
    if aim == "]C1":
        expected = "gs1_128"
    return aim + row["text"], aim, expected


GTIN_PAD = {"ean13": 1, "ean8": 6, "upca": 1, "upce": 1}


@pytest.mark.parametrize("row", zxing_rows())
def test_every_real_sample_is_accepted_or_rejected_as_its_symbology_demands(row: dict[str, str] | None) -> None:
    text, _aim, expected = scanner_text(row)
    assert row is not None
    if expected is None:
        with pytest.raises(BarcodeRejectedError) as caught:
            decode(text, mode="checkout", options=OPTIONS)
        assert caught.value.reason is RejectReason.UNSUPPORTED_SYMBOLOGY
        assert ("ITF" if row["set"].startswith("itf") else "QR Code") in str(caught.value)
        return
    scan = decode(text, mode="checkout", options=OPTIONS)
    assert scan.symbology == expected
    assert scan.code == row["text"]
    if expected in GTIN_PAD:
        assert scan.gtin == "0" * GTIN_PAD[expected] + row["text"]
        assert scan.gtin is not None
        assert len(scan.gtin) == 14
    PAYLOAD_MODELS["scan.sale"].model_validate(scan.model_dump(mode="json", exclude_none=True))


@pytest.mark.parametrize("row", zxing_rows())
def test_ean_upc_samples_are_recognised_without_aim_ids(row: dict[str, str] | None) -> None:
    _, _, expected = scanner_text(row)
    assert row is not None
    if expected not in GTIN_PAD:
        return
    symbol = classify(row["text"], aim_ids=False)
    assert symbol.symbology == expected


def test_gs1_128_samples_that_break_gs1_syntax_are_kept_leniently_and_rejected_strictly() -> None:
    # zxing's "]C1 123456" reads as AI (12) with a 4-digit date: not valid GS1.
    lenient = decode("]C1123456", mode="checkout", options=OPTIONS)
    assert (lenient.symbology, lenient.ai, lenient.gtin) == ("gs1_128", {}, None)
    strict = DecodeOptions(gs1_strict=True)
    with pytest.raises(BarcodeRejectedError) as caught:
        decode("]C1123456", mode="checkout", options=strict)
    assert caught.value.reason is RejectReason.GS1_SYNTAX


def test_gs1_element_strings_give_gtin_batch_expiry_serial_and_net_weight() -> None:
    text = "]C10109501101020917" + "17250600" + "10ABC123" + GS + "3103001250" + "21SN42"
    scan = decode(text, mode="receiving", options=OPTIONS)
    assert scan.symbology == "gs1_128"
    assert scan.gtin == "09501101020917"
    assert scan.expiry == "2025-06-30"  # day 00: the month's last day
    assert scan.batch == "ABC123"
    assert scan.net_weight_g == 1250.0
    assert scan.serial == "SN42"
    assert scan.ai == {"01": "09501101020917", "17": "250600", "10": "ABC123", "3103": "001250", "21": "SN42"}


def test_gs1_datamatrix_is_parsed_the_same_way() -> None:
    scan = decode("]d2" + "0109501101020917" + "10LOT7" + GS + "3102000750", mode="stock_count", options=OPTIONS)
    assert (scan.symbology, scan.gtin, scan.batch, scan.net_weight_g) == (
        "gs1_datamatrix",
        "09501101020917",
        "LOT7",
        7500.0,
    )


def test_a_gtin_with_a_bad_check_digit_inside_gs1_is_rejected_even_leniently() -> None:
    with pytest.raises(BarcodeRejectedError) as caught:
        decode("]C10109501101020918", mode="checkout", options=OPTIONS)
    assert caught.value.reason is RejectReason.BAD_CHECK_DIGIT


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("]E05901234123458", RejectReason.BAD_CHECK_DIGIT),
        ("]E448512344", RejectReason.BAD_CHECK_DIGIT),
        ("]E0036602301468", RejectReason.BAD_CHECK_DIGIT),
        ("]E001234566", RejectReason.BAD_CHECK_DIGIT),  # UPC-E checked on its UPC-A expansion
        ("]E059012341234X", RejectReason.ILLEGAL_CHARACTERS),
        ("]E012345", RejectReason.BAD_LENGTH),
        ("]C0ab\tc", RejectReason.ILLEGAL_CHARACTERS),
        ("]C0ab" + GS + "c", RejectReason.ILLEGAL_CHARACTERS),
        ("5901234123457", RejectReason.MISSING_IDENTIFIER),
        ("]I100012345678905", RejectReason.UNSUPPORTED_SYMBOLOGY),
        ("]e00100000000000000", RejectReason.RESERVED_GTIN),  # zxing-cpp databarltd-1/00: all zeros
        ("]E00000000000000", RejectReason.RESERVED_GTIN),
        ("]E400000000", RejectReason.RESERVED_GTIN),
        ("]E09912345678909", RejectReason.RESERVED_GTIN),  # GS1 prefix 99: a coupon, no trade item
        ("]C10100000000000000", RejectReason.RESERVED_GTIN),
        ("]d1hello", RejectReason.UNSUPPORTED_SYMBOLOGY),
        ("]E3590123412345712", RejectReason.UNSUPPORTED_SYMBOLOGY),
        ("]C0", RejectReason.EMPTY),
        ("]C1" + GS, RejectReason.EMPTY),
        ("]C0" + "x" * 600, RejectReason.TOO_LONG),
    ],
)
def test_bad_codes_are_rejected_with_their_reason(text: str, reason: RejectReason) -> None:
    with pytest.raises(BarcodeRejectedError) as caught:
        decode(text, mode="checkout", options=OPTIONS)
    assert caught.value.reason is reason


DATABAR_FILE = Path(__file__).parent / "data" / "zxing_databar_texts.csv"


def databar_rows() -> list[Any]:
    """The real DataBar texts of zxing-cpp's samples (see the file's header)."""
    with DATABAR_FILE.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    return [pytest.param(row, id=f"{row['set']}:{row['sample']}") for row in rows]


@pytest.mark.parametrize("row", databar_rows())
def test_real_gs1_databar_texts_give_their_gtin_ais_and_weight(row: dict[str, str]) -> None:
    text = "]e0" + row["text"]
    if row["refused"]:
        with pytest.raises(BarcodeRejectedError) as caught:
            decode(text, mode="checkout", options=OPTIONS)
        assert caught.value.reason == row["refused"]
        return
    scan = decode(text, mode="checkout", options=OPTIONS)
    assert (scan.symbology, scan.symbology_guessed, scan.gs1_incomplete) == ("gs1_databar", False, False)
    assert scan.gtin == (row["gtin"] or None)
    assert scan.ai == dict(pair.split("=", 1) for pair in row["ai"].split(";"))
    assert scan.net_weight_g == (float(row["net_weight_g"]) if row["net_weight_g"] else None)
    PAYLOAD_MODELS["scan.sale"].model_validate(scan.model_dump(mode="json", exclude_none=True))


def test_pound_weights_are_converted_exactly_to_grams() -> None:
    # zxing-cpp rssexpanded-1/20: (3202) 001750 is 17.50 lb; 1 lb = 0.45359237 kg by definition.
    scan = decode("]e00190012345678908320200175015100312", mode="receiving", options=OPTIONS)
    assert scan.net_weight_g == float(Decimal("17.50") * Decimal("453.59237")) == 7937.866475
    assert scan.ai["3202"] == "001750"  # the unit the label used stays on the wire


ISSUE_423 = "]C1" + "1599123131030017501012A" + GS + "422123" + GS + "21123456" + GS + "4230123456789012"


def test_a_variable_length_value_biip_would_cut_short_is_flagged_not_carried() -> None:
    # (423) holds 13 digits; its format takes 3 to 15 in groups of 3, and biip alone returned 12 of them.
    scan = decode(ISSUE_423, mode="checkout", options=OPTIONS)
    assert scan.gs1_incomplete
    assert scan.gs1_problem is not None
    assert "(423)" in scan.gs1_problem
    assert "0123456789012" in scan.gs1_problem
    assert scan.ai == {"15": "991231", "3103": "001750", "10": "12A", "422": "123", "21": "123456"}
    with pytest.raises(BarcodeRejectedError) as caught:
        decode(ISSUE_423, mode="checkout", options=DecodeOptions(gs1_strict=True))
    assert caught.value.reason is RejectReason.GS1_SYNTAX
    assert "(423)" in caught.value.detail


def test_complete_gs1_data_is_not_flagged() -> None:
    scan = decode("]C10109501101020917" + "10ABC" + GS + "423012345678", mode="checkout", options=OPTIONS)
    assert (scan.gs1_incomplete, scan.gs1_problem, scan.ai["423"]) == (False, None, "012345678")


NO_AIM = DecodeOptions(aim_ids=False, variable_measure=DEFAULT_VARIABLE_MEASURE)


def _programmed(*names: SymbologyName) -> DecodeOptions:
    return DecodeOptions(aim_ids=False, programmed=frozenset(names))


@pytest.mark.parametrize(
    ("text", "options", "symbology", "gtin", "guessed"),
    [
        # 8 digits from a scanner not programmed for EAN-8 or UPC-E are Code 128, whatever the check digit says.
        ("96385074", _programmed("ean13", "code128"), "code128", None, False),
        ("96385075", _programmed("ean13", "code128"), "code128", None, False),
        # Programmed for both: EAN-8 wins, and the event says it was a guess.
        ("96385074", _programmed("ean8", "code128"), "ean8", "00000096385074", True),
        # A scanner checks an EAN-8 before sending it: digits that fail the check were Code 128.
        ("96385075", _programmed("ean8", "code128"), "code128", None, False),
        # Whitespace the scanner adds around an EAN does not make it Code 128.
        (" 5901234123457", _programmed("ean13", "code128"), "ean13", "05901234123457", True),
        ("5901234123457 \t", _programmed("ean13"), "ean13", "05901234123457", False),
        (" AB-12 ", _programmed("ean13", "code128"), "code128", None, False),
        # DataBar's text without an AIM id keeps its GTIN instead of becoming Code 128.
        ("0104412345678909", _programmed("gs1_databar", "code128"), "gs1_databar", "04412345678909", True),
        ("0104412345678909", _programmed("gs1_databar"), "gs1_databar", "04412345678909", False),
        ("0104412345678909", NO_AIM, "gs1_128", "04412345678909", True),
    ],
)
def test_without_aim_ids_only_the_programmed_symbologies_are_tried(
    text: str, options: DecodeOptions, symbology: str, gtin: str | None, guessed: bool
) -> None:
    scan = decode(text, mode="checkout", options=options)
    assert (scan.symbology, scan.gtin, scan.symbology_guessed) == (symbology, gtin, guessed)
    assert scan.code == (text if symbology == "code128" else text.strip())


def test_a_text_no_programmed_symbology_fits_is_refused_with_the_list() -> None:
    with pytest.raises(BarcodeRejectedError) as caught:
        decode("Code 128", mode="checkout", options=_programmed("ean13", "ean8"))
    assert caught.value.reason is RejectReason.UNSUPPORTED_SYMBOLOGY
    assert "ean13, ean8" in caught.value.detail
    with pytest.raises(BarcodeRejectedError) as bad_check:
        decode("5901234123458", mode="checkout", options=_programmed("ean13"))
    assert bad_check.value.reason is RejectReason.BAD_CHECK_DIGIT


def test_without_aim_ids_data_with_a_gs_is_gs1_and_flagged_when_it_breaks_gs1_syntax() -> None:
    # Only GS1 symbols send FNC1 as GS: such data is never Code 128, even when its AIs are wrong.
    scan = decode("10ABC" + GS + "99XYZ" + GS + "ZZ", mode="checkout", options=NO_AIM)
    assert (scan.symbology, scan.symbology_guessed, scan.gs1_incomplete) == ("gs1_128", True, True)
    assert scan.ai == {"10": "ABC", "99": "XYZ"}


def test_a_profile_lists_the_symbologies_its_scanner_reads() -> None:
    assert set(BarcodeProfile.model_fields["symbologies"].default) == set(ALL_SYMBOLOGIES)
    with pytest.raises(ValidationError):
        BarcodeProfile.model_validate(
            {"id": "x", "kind": "barcode", "vendor": "v", "model": "m", "symbologies": ["itf"]}
        )


def test_upce_sent_in_its_eight_digits_expands_to_the_upca_gtin() -> None:
    scan = decode("]E001234565", mode="checkout", options=OPTIONS)
    assert (scan.symbology, scan.gtin) == ("upce", "00012345000065")


@pytest.mark.parametrize(
    ("code", "price", "weight", "key"),
    [
        ("2012345012349", "12.34", None, "02012345000007"),  # 20: price, 2 decimals
        ("2400001009994", "9.99", None, "02400001000002"),
        ("2512345012346", None, 1234.0, "02512345000004"),  # 25: weight in grams
        ("0212345001505", "1.50", None, "00212345000002"),  # 02 (a UPC-A with number system 2)
    ],
)
def test_in_store_variable_measure_codes_carry_price_or_weight(
    code: str, price: str | None, weight: float | None, key: str
) -> None:
    fixed = code[:-1] + str(_check(code[:-1]))
    scan = decode("]E0" + fixed, mode="checkout", options=OPTIONS)
    assert (scan.price, scan.net_weight_g) == (price, weight)
    assert scan.gtin == key[:-1] + str(_check(key[1:-1]))


def test_a_store_can_lay_out_its_own_prefixes_with_a_price_check_digit() -> None:
    rule = VariableMeasureRule(prefixes=("23",), measure="price", decimals=2, price_check_digit=True)
    options = DecodeOptions(variable_measure=(rule,))
    # item 12345, price check digit of 0150 is 0 (GS1 4-digit price check), price 1.50
    from biip.checksums import gs1_price_weight_check_digit

    pcd = gs1_price_weight_check_digit("0150")
    body = f"2312345{pcd}0150"
    scan = decode("]E0" + body + str(_check(body)), mode="checkout", options=options)
    assert scan.price == "1.50"
    wrong = f"2312345{(pcd + 1) % 10}0150"
    with pytest.raises(BarcodeRejectedError) as caught:
        decode("]E0" + wrong + str(_check(wrong)), mode="checkout", options=options)
    assert caught.value.reason is RejectReason.BAD_CHECK_DIGIT


def test_settings_refuse_a_prefix_in_two_rules_and_non_store_prefixes() -> None:
    with pytest.raises(ValidationError, match="more than one rule"):
        BarcodeSettings.model_validate(
            {
                "variable_measure": [
                    {"prefixes": ["20"], "measure": "price"},
                    {"prefixes": ["20"], "measure": "weight_g"},
                ]
            }
        )
    with pytest.raises(ValidationError, match="in-store prefix"):
        VariableMeasureRule(prefixes=("30",), measure="price")


def test_each_mode_emits_its_event_kind_with_the_mode_in_the_payload() -> None:
    assert KIND_OF_MODE == {"checkout": "scan.sale", "receiving": "scan.receiving", "stock_count": "scan.count"}
    for mode, kind in KIND_OF_MODE.items():
        scan = decode("]E05901234123457", mode=mode, options=OPTIONS)  # type: ignore[arg-type]
        assert PAYLOAD_MODELS[kind].model_validate(scan.model_dump(mode="json")).mode == mode  # type: ignore[attr-defined]


def test_double_reads_within_the_window_are_suppressed_and_a_deliberate_rescan_counts() -> None:
    clock = FakeClock()
    reads = DoubleReadFilter(window_s=1.0, clock=clock.monotonic)
    assert reads.admit("A")
    clock.advance(0.4)
    assert not reads.admit("A")  # the scanner saw it twice
    clock.advance(0.5)
    assert not reads.admit("A")  # still held under the scanner: the window runs from the last sighting
    clock.advance(1.1)
    assert reads.admit("A")  # taken away, then scanned again on purpose
    assert reads.admit("B")
    assert reads.admit("A")  # A B A is three items
    assert reads.suppressed_total == 2


def _check(body: str) -> int:
    from biip.checksums import gs1_standard_check_digit

    return gs1_standard_check_digit(body)


# --------------------------------------------------------------------------- fuzzing

AIMS = st.sampled_from(["]E0", "]E4", "]C0", "]C1", "]d2", "]e0", "]I1", "]Q1", "]X0", "", "]"])
ALPHABET = st.sampled_from([*list("0123456789"), GS, "A", "z", "-", "é", "\x00", "\t", "]", "(", " "])
SEEDS = st.sampled_from(
    [
        "5901234123457",
        "48512343",
        "0012345000065",
        "01234565",
        "0109501101020917" + "17250600" + "10ABC123" + GS + "3103001250",
        "8101054321120021123456",
        "2012345012349",
        "0190012345678908320200175015100312",
        "1599123131030017501012A" + GS + "4230123456789012",
        "Code 128",
    ]
)


@st.composite
def scanned_texts(draw: st.DrawFn) -> str:
    """Random texts and mutations of valid codes (a digit changed, cut, extended)."""
    aim = draw(AIMS)
    if draw(st.booleans()):
        return aim + draw(st.text(ALPHABET, max_size=60))
    seed = list(draw(SEEDS))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(seed)))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        char = draw(ALPHABET)
        if action == "replace" and at < len(seed):
            seed[at] = char
        elif action == "insert":
            seed.insert(at, char)
        elif seed and at < len(seed):
            del seed[at]
    return aim + "".join(seed)


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=scanned_texts(), aim_ids=st.booleans(), strict=st.booleans())
def test_fuzzed_scans_either_validate_against_the_wire_model_or_are_rejected(
    text: str, aim_ids: bool, strict: bool
) -> None:
    options = DecodeOptions(aim_ids=aim_ids, gs1_strict=strict, variable_measure=DEFAULT_VARIABLE_MEASURE)
    try:
        scan = decode(text, mode="checkout", options=options)
    except BarcodeRejectedError as err:
        reason: RejectReason | None = err.reason
    else:
        reason = None
    if reason is not None:
        assert reason in set(RejectReason)
        return
    PAYLOAD_MODELS["scan.sale"].model_validate(scan.model_dump(mode="json", exclude_none=True))
    if scan.gtin is not None:
        assert len(scan.gtin) == 14
        assert scan.gtin.isdigit()


@settings(max_examples=1500, deadline=None)
@given(data=st.text(ALPHABET, max_size=80), strict=st.booleans())
def test_fuzzed_gs1_data_parses_or_is_rejected(data: str, strict: bool) -> None:
    try:
        parsed = parse_gs1(data, strict=strict)
    except BarcodeRejectedError as err:
        reason: RejectReason | None = err.reason
    else:
        reason = None
    if reason is not None:
        assert reason in {RejectReason.EMPTY, RejectReason.GS1_SYNTAX, RejectReason.BAD_CHECK_DIGIT}
        return
    assert parsed.complete or not strict
