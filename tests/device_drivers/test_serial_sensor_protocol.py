"""Fuzzing the pure line parser and its NMEA-style checksum."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_drivers.profiles import load_catalog
from device_drivers.serial_sensor.profile import LineFormat, SerialSensorProfile
from device_drivers.serial_sensor.protocol import (
    LineRejectedError,
    parse_line,
    strip_checksum,
    with_checksum,
    xor_checksum,
)
from tests.device_drivers.fuzzing import fuzz, mutate


def _shipped() -> LineFormat:
    profile = load_catalog().get("diy-th-serial")
    assert isinstance(profile, SerialSensorProfile)
    return profile.line


SHIPPED = _shipped()
# A second format: no checksum, integers in tenths, an optional humidity.
TENTHS = LineFormat.model_validate(
    {
        "pattern": r"TEMP:(?P<t>[-+]?\d+)(?: HUM:(?P<h>\S+))?",
        "fields": [
            {"quantity": "temperature", "group": "t", "scale": 0.1, "min": -40, "max": 85},
            {"quantity": "humidity", "group": "h", "scale": 0.1, "min": 0, "max": 100},
        ],
    }
)
FORMATS = st.sampled_from([SHIPPED, TENTHS])


def _check(line: bytes, fmt: LineFormat) -> None:
    """Parse ``line``: a result whose values respect the profile, or LineRejectedError, nothing else."""
    try:
        result = parse_line(line, fmt)
    except LineRejectedError:
        return
    assert result.measurements or result.rejects
    by_quantity = {f.quantity: f for f in fmt.fields}
    for measurement in result.measurements:
        field = by_quantity[measurement.quantity]
        assert measurement.value == measurement.value
        assert abs(measurement.value) != float("inf")
        assert field.min is None or measurement.value >= field.min
        assert field.max is None or measurement.value <= field.max


@fuzz(2000)
@given(st.binary(max_size=80), FORMATS)
def test_random_bytes_are_parsed_or_rejected_never_anything_else(line: bytes, fmt: LineFormat) -> None:
    _check(line, fmt)


@st.composite
def mutated_lines(draw: st.DrawFn) -> tuple[bytes, LineFormat]:
    """A good line of one of the formats, with bytes flipped, dropped, inserted or cut off."""
    fmt = draw(FORMATS)
    if fmt is SHIPPED:
        t = draw(st.floats(-60, 140, allow_nan=False))
        h = draw(st.floats(-5, 110, allow_nan=False))
        line = with_checksum(f"T={t:.2f};H={h:.2f}".encode())
    else:
        line = f"TEMP:{draw(st.integers(-600, 1000))} HUM:{draw(st.integers(-10, 1100))}".encode()
    return mutate(draw, line, min_changes=0, max_changes=3), fmt


@fuzz(2000)
@given(mutated_lines())
def test_mutated_lines_are_parsed_or_rejected_never_anything_else(case: tuple[bytes, LineFormat]) -> None:
    _check(*case)


@fuzz(600)
@given(st.floats(-40, 125, allow_nan=False), st.floats(0, 100, allow_nan=False))
def test_good_lines_give_their_values_back(temperature: float, humidity: float) -> None:
    line = with_checksum(f"T={temperature:.2f};H={humidity:.2f}".encode())
    result = parse_line(line + b"\r", SHIPPED)
    assert [m.value for m in result.measurements] == [float(f"{temperature:.2f}"), float(f"{humidity:.2f}")]
    assert result.rejects == ()


@fuzz(1500)
@given(st.binary(min_size=1, max_size=40).filter(lambda p: not p.startswith(b"$")), st.data())
def test_any_single_changed_byte_breaks_the_checksum(payload: bytes, data: st.DataObject) -> None:
    line = with_checksum(payload)
    assert strip_checksum(line) == payload
    position = data.draw(st.integers(0, len(payload) - 1))
    damaged = bytearray(line)
    damaged[position] ^= data.draw(st.integers(1, 255))
    if damaged.startswith(b"$"):
        return  # a leading '$' is not part of the checksummed payload
    with pytest.raises(LineRejectedError):
        strip_checksum(bytes(damaged))


def test_checksum_and_format_rules() -> None:
    assert xor_checksum(b"T=21.43;H=38.10") == b"29"
    assert strip_checksum(b"$T=21.43;H=38.10*29") == b"T=21.43;H=38.10"  # NMEA's '$' is not checksummed
    assert xor_checksum(b"T=2") == b"5B"
    assert strip_checksum(b"T=2*5b") == b"T=2"
    for bad, reason in [
        (b"T=21.43;H=38.10", "no '\\*HH'"),
        (b"T=21.43;H=38.10*2", "two hex digits"),
        (b"T=21.43;H=38.10*28", "does not match"),
        (with_checksum(b"T=21.43"), "does not match the sensor's format"),
        (with_checksum(b"T=21.43;H=\xff8.10"), "not ascii"),
    ]:
        with pytest.raises(LineRejectedError, match=reason):
            parse_line(bad, SHIPPED)


def test_scale_range_and_optional_groups() -> None:
    assert [(m.quantity.value, m.value) for m in parse_line(b"TEMP:214 HUM:381", TENTHS).measurements] == [
        ("temperature", 21.4),
        ("humidity", 38.1),
    ]
    assert [m.value for m in parse_line(b"TEMP:-35", TENTHS).measurements] == [-3.5]  # no humidity: none reported
    out_of_range = parse_line(b"TEMP:900 HUM:381", TENTHS)
    assert [m.quantity.value for m in out_of_range.measurements] == ["humidity"]
    assert out_of_range.rejects
    assert "outside" in out_of_range.rejects[0]
    for bad in (b"TEMP:1 HUM:nan", b"TEMP:1 HUM:1e999999999", b"TEMP:1 HUM:0x10"):
        with pytest.raises(LineRejectedError, match="number"):
            parse_line(bad, TENTHS)
