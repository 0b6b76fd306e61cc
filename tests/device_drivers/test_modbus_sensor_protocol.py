"""Fuzzing the pure Modbus register decoding, request planning and response diagnosis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU

from device_drivers.modbus_sensor.profile import ModbusSensorProfile, RegisterField, split_address
from device_drivers.modbus_sensor.protocol import (
    ReadBlock,
    RegisterDecodeError,
    decode_block,
    decode_field,
    diagnose_response,
    encode_value,
    plan_reads,
    raw_value,
)
from storegate.wire import Quantity
from tests.device_drivers.fuzzing import fuzz, mutate

SCALES = (1.0, 0.5, 0.1, 0.01, 0.001, 2.0, 10.0)


@st.composite
def register_fields(draw: st.DrawFn, *, quantity: Quantity | None = None, address: int | None = None) -> RegisterField:
    """A valid register field, with or without a range."""
    low = draw(st.none() | st.floats(-1000, 1000))
    high = draw(st.none() | st.floats(-1000, 1000))
    if low is not None and high is not None and low >= high:
        low, high = None, high
    return RegisterField(
        quantity=quantity if quantity is not None else draw(st.sampled_from(Quantity)),
        function=draw(st.sampled_from(["input", "holding"])),
        address=address if address is not None else draw(st.integers(0, 0xFFFE)),
        count=draw(st.sampled_from([1, 2])),
        word_order=draw(st.sampled_from(["big", "little"])),
        signed=draw(st.booleans()),
        scale=draw(st.sampled_from(SCALES)),
        min=low,
        max=high,
    )


@st.composite
def register_maps(draw: st.DrawFn) -> list[RegisterField]:
    """Up to four non-overlapping fields, one per quantity, often next to each other."""
    quantities = draw(st.lists(st.sampled_from(Quantity), min_size=1, max_size=4, unique=True))
    fields: list[RegisterField] = []
    address = draw(st.integers(0, 200))
    for quantity in quantities:
        field = draw(register_fields(quantity=quantity, address=address))
        fields.append(field)
        address += field.count + draw(st.sampled_from([0, 0, 0, 1, 5]))
    return fields


# --------------------------------------------------------------------------- planning


@fuzz(150)
@given(register_maps())
def test_plan_reads_covers_every_field_once_in_contiguous_requests(fields: list[RegisterField]) -> None:
    blocks = plan_reads(fields)
    planned = [field for block in blocks for field in block.fields]
    assert sorted(planned, key=id) == sorted(fields, key=id)
    for block in blocks:
        assert 1 <= block.count <= 125
        assert all(field.function == block.function for field in block.fields)
        assert block.fields[0].address == block.address
        words = [w for field in block.fields for w in range(field.address, field.address + field.count)]
        assert words == list(range(block.address, block.address + block.count))


def test_the_xy_md02_map_is_one_request_and_a_gap_splits_it() -> None:
    temperature = RegisterField(quantity=Quantity.TEMPERATURE, address=1, signed=True, scale=0.1)
    humidity = RegisterField(quantity=Quantity.HUMIDITY, address=2, scale=0.1)
    assert [(b.address, b.count) for b in plan_reads([humidity, temperature])] == [(1, 2)]
    far = humidity.model_copy(update={"address": 4})
    assert [(b.address, b.count) for b in plan_reads([temperature, far])] == [(1, 1), (4, 1)]
    holding = humidity.model_copy(update={"function": "holding"})
    assert [(b.function_code, b.count) for b in plan_reads([temperature, holding])] == [(3, 1), (4, 1)]


# --------------------------------------------------------------------------- decoding


WORD_LISTS = st.lists(st.integers(-70000, 140000), max_size=12)


@fuzz(150)
@given(register_maps(), st.lists(st.tuples(WORD_LISTS, st.booleans()), min_size=16, max_size=16))
def test_decode_block_never_fails_with_anything_but_a_decode_error(
    fields: list[RegisterField], cases: list[tuple[list[int], bool]]
) -> None:
    block = plan_reads(fields)[0]
    for words, fit in cases:  # 16 word lists per register map: 2,400 responses in all
        if fit:  # mostly the right number of 16-bit words, so decoding gets past the length check
            words = [w % 0x10000 for w in (words or [0]) * block.count][: block.count]
        try:
            result = decode_block(block, words)
        except RegisterDecodeError:
            assert not fit or any(w > 0xFFFF or w < 0 for w in words)
            continue
        assert len(words) == block.count
        assert len(result.measurements) + len(result.rejects) == len(block.fields)
        decoded = {m.quantity for m in result.measurements}
        for field in block.fields:
            value = next((m.value for m in result.measurements if m.quantity is field.quantity), None)
            assert field.quantity in decoded or value is None
            if value is not None:
                assert value == value
                assert abs(value) != float("inf")
                assert field.min is None or value >= field.min
                assert field.max is None or value <= field.max


@fuzz(600)
@given(register_fields(), st.floats(-5000, 5000, allow_nan=False))
def test_encode_then_decode_gives_the_value_back_to_the_scale(field: RegisterField, value: float) -> None:
    field = field.model_copy(update={"min": None, "max": None})
    words = encode_value(field, value)
    assert len(words) == field.count
    assert all(0 <= w <= 0xFFFF for w in words)
    decoded = decode_field(field, words)
    bits = 16 * field.count
    low = -(1 << (bits - 1)) if field.signed else 0
    high = (1 << (bits - 1)) - 1 if field.signed else (1 << bits) - 1
    if low * field.scale <= value <= high * field.scale:
        assert decoded == pytest.approx(value, abs=field.scale / 2 + 1e-9)
    else:  # beyond what the register can hold: clamped to its end
        assert any(decoded == pytest.approx(end * field.scale) for end in (low, high))


def test_recorded_values_decode_as_the_datasheet_says() -> None:
    temperature = RegisterField(quantity=Quantity.TEMPERATURE, address=1, signed=True, scale=0.1)
    assert decode_field(temperature, [0x0131]) == 30.5
    assert decode_field(temperature, [0xFF33]) == -20.5  # two's complement, from the datasheet
    assert decode_field(temperature.model_copy(update={"scale": 0.01}), [0x0BEA]) == 30.5
    assert raw_value([0xFFFF, 0xFFFE], signed=True) == -2
    assert raw_value([0x0001, 0x0002], signed=False, word_order="little") == 0x0002_0001
    with pytest.raises(RegisterDecodeError):
        decode_field(temperature.model_copy(update={"max": 125.0}), [0x7FFF])


# --------------------------------------------------------------------------- diagnosis of unusable bytes


def _frame(body: bytes) -> bytes:
    return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")


BLOCK = ReadBlock("input", 1, 2, ())
GOOD = _frame(bytes.fromhex("01 04 04 01 31 02 22"))


@st.composite
def mutated_responses(draw: st.DrawFn) -> bytes:
    """The recorded good response with bytes flipped, dropped, added or cut off."""
    return mutate(draw, GOOD, min_changes=1, max_changes=4)


@fuzz(1500)
@given(st.binary(max_size=40) | mutated_responses(), st.integers(1, 247))
def test_diagnose_response_always_explains_and_never_raises(data: bytes, unit: int) -> None:
    reason = diagnose_response(data, unit=unit, block=BLOCK)
    assert isinstance(reason, str)
    assert reason


@fuzz(400)
@given(st.integers(0, len(GOOD) - 1), st.integers(1, 255))
def test_any_single_corrupted_byte_of_a_response_is_diagnosed(position: int, flip: int) -> None:
    data = bytearray(GOOD)
    data[position] ^= flip
    reason = diagnose_response(bytes(data), unit=1, block=BLOCK)
    assert reason != "unusable response"  # always a specific reason: garbage, wrong length, CRC error...


def test_diagnosis_names_the_usual_faults() -> None:
    assert diagnose_response(b"", unit=1, block=BLOCK) == "no answer"
    assert diagnose_response(GOOD[:-1] + b"\x00", unit=1, block=BLOCK) == "crc error"
    assert diagnose_response(GOOD[:6], unit=1, block=BLOCK).startswith("truncated")
    assert diagnose_response(_frame(b"\x01\x84\x04"), unit=1, block=BLOCK) == "exception code 4"
    assert diagnose_response(_frame(b"\x01\x04\x02\x01\x31"), unit=1, block=BLOCK).startswith("wrong length")
    assert diagnose_response(b"\xac\x4c\x09", unit=1, block=BLOCK).startswith("garbage")


# --------------------------------------------------------------------------- profile rules and addresses


@fuzz(500)
@given(st.text(max_size=40), st.none() | st.integers(-5, 400))
def test_split_address_takes_only_a_valid_unit_suffix(port: str, unit: int | None) -> None:
    address = port if unit is None else f"{port}#unit={unit}"
    try:
        found_port, found_unit = split_address(address)
    except ValueError:
        assert unit is not None
        assert not 1 <= unit <= 247
        return
    if unit is not None and 1 <= unit <= 247:
        assert (found_port, found_unit) == (port, unit)
    elif found_unit is None:
        assert found_port == address


def test_profile_refuses_overlapping_registers_and_odd_stop_bits() -> None:
    base = {"id": "x", "kind": "modbus-sensor", "vendor": "v", "model": "m"}
    two_words = {"quantity": "temperature", "address": 1, "count": 2}
    with pytest.raises(ValueError, match="mapped twice"):
        ModbusSensorProfile.model_validate(base | {"registers": [two_words, {"quantity": "humidity", "address": 2}]})
    with pytest.raises(ValueError, match="stopbits"):
        ModbusSensorProfile.model_validate(base | {"registers": [two_words], "serial": {"stopbits": 1.5}})
    with pytest.raises(ValueError, match="scale"):
        ModbusSensorProfile.model_validate(base | {"registers": [two_words | {"scale": 0}]})
