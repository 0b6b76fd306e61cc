"""The shelf line protocol: checksum, every message and command, rejects by reason, and fuzzing."""

from __future__ import annotations

import contextlib
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_drivers.shelf.protocol import (
    MAX_LINE,
    RAW_MAX,
    RAW_MIN,
    Ack,
    Calibrate,
    ControllerCommand,
    FrameError,
    Info,
    InfoRequest,
    LineDecoder,
    Message,
    SetRate,
    SetWindow,
    SlotError,
    SlotWeight,
    Tare,
    Weights,
    crc16_ccitt_false,
    encode_command,
    encode_message,
    frame,
    parse_command,
    parse_message,
    unframe,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "devices" / "shelf.md"


def strip(line: bytes) -> bytes:
    """A line as the transport hands it over: without CRLF."""
    assert line.endswith(b"\r\n")
    return line[:-2]


def test_crc_matches_the_ccitt_false_check_value() -> None:
    assert crc16_ccitt_false(b"123456789") == 0x29B1
    assert crc16_ccitt_false(b"") == 0xFFFF


def test_every_framed_line_in_the_documentation_has_a_valid_checksum() -> None:
    """The doc's worked examples are what firmware authors copy: each must check out."""
    assert DOC.is_file(), f"{DOC} is missing"
    lines = re.findall(r"(\$[!-~]*\*[0-9A-F]{4})", DOC.read_text(encoding="utf-8"))
    assert len(lines) >= 20, "the protocol doc should show an example of every line"
    for line in lines:
        unframe(line.encode())  # raises FrameError naming the line's defect


def test_worked_example_parses_to_the_documented_values() -> None:
    line = b"$W,1234,3,1003.4,842312,-0.2,-1530,,*5FD9"
    assert parse_message(line) == Weights(
        seq=1234, slots=(SlotWeight(1003.4, 842312), SlotWeight(-0.2, -1530), SlotWeight(None, None))
    )


@pytest.mark.parametrize(
    "message",
    [
        Weights(seq=0, slots=(SlotWeight(0.0, 0),)),
        Weights(seq=2**32 - 1, slots=(SlotWeight(-12.5, RAW_MIN), SlotWeight(None, None), SlotWeight(4999.9, RAW_MAX))),
        Info(firmware="1.2.0+rc1", serial="SG-SH1-000123", slots=8, rate_hz=10, window=4),
        Ack(tag=0, command="RATE", ok=True),
        Ack(tag=65535, command="CAL", ok=False, reason="NO_LOAD"),
        SlotError(slot=3, code="DISC"),
        SlotError(slot=32, code="SAT"),
        SlotError(slot=1, code="NONE"),
    ],
)
def test_messages_round_trip(message: Message) -> None:
    assert parse_message(strip(encode_message(message))) == message


@pytest.mark.parametrize(
    "command",
    [
        SetRate(tag=1, hz=80),
        SetWindow(tag=2, samples=1),
        Tare(tag=3, slot=8),
        Calibrate(tag=4, slot=2, grams=500.0),
        InfoRequest(tag=65535),
    ],
)
def test_commands_round_trip(command: ControllerCommand) -> None:
    assert parse_command(unframe(strip(encode_command(command)))) == command


def test_lower_case_checksum_digits_are_accepted() -> None:
    line = strip(frame("E,2,DISC"))
    assert parse_message(line[:-4] + line[-4:].lower()) == SlotError(slot=2, code="DISC")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"W,1,1,0.0,0*0000", "no_start"),
        (b"$W,1,1,0.0,0", "no_checksum"),
        (b"$W,1,1,0.0,0*12G4", "no_checksum"),
        (strip(frame("W,1,1,0.0,0"))[:-1] + b"0", "bad_checksum"),
        (strip(frame("W,1,1,0.0,0")).replace(b"0.0", b"0.1"), "bad_checksum"),
        (b"$W,1,1,\xff*0000", "not_ascii"),
        (b"$W,1\t,1*0000", "not_ascii"),
        (b"$" + b"0" * MAX_LINE, "too_long"),
        (strip(frame("X,1,2")), "unknown_type"),
        (strip(frame("")), "unknown_type"),
        (strip(frame("W,1,2,0.0,0")), "field_count"),
        (strip(frame("W,1")), "field_count"),
        (strip(frame("I,1.0,SN,8,10")), "field_count"),
        (strip(frame("A,1,RATE,OK,EXTRA")), "field_count"),
        (strip(frame("A,1,RATE,ERR")), "field_count"),
        (strip(frame("E,1")), "field_count"),
        (strip(frame("W,1,1,0.0,")), "bad_field"),
        (strip(frame("W,1,1,,5")), "bad_field"),
        (strip(frame("W,1,1,1e3,5")), "bad_field"),
        (strip(frame("W,1,1,0.0,8388608")), "bad_field"),
        (strip(frame("W,-1,1,0.0,0")), "bad_field"),
        (strip(frame("W,4294967296,1,0.0,0")), "bad_field"),
        (strip(frame("W,1,33," + ",".join(["0.0,0"] * 33))), "bad_field"),
        (strip(frame("W,01,1,0.0,0")), "bad_field"),
        (strip(frame("I,1.0,SN,0,10,4")), "bad_field"),
        (strip(frame("I,1.0,SN,8,81,4")), "bad_field"),
        (strip(frame("I,1.0,S N,8,10,4")), "bad_field"),
        (strip(frame("A,65536,RATE,OK")), "bad_field"),
        (strip(frame("A,1,RATE,MAYBE")), "bad_field"),
        (strip(frame("A,1,rate,OK")), "bad_field"),
        (strip(frame("A,1,CAL,ERR,no load")), "bad_field"),
        (strip(frame("E,0,DISC")), "bad_field"),
        (strip(frame("E,1,FIRE")), "bad_field"),
        (b"$E,1*2*0000", "bad_field"),
    ],
)
def test_malformed_lines_are_rejected_with_their_reason(line: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_message(line)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("RATE,1,0", "bad_field"),
        ("RATE,1,81", "bad_field"),
        ("WIN,1,65", "bad_field"),
        ("TARE,1", "field_count"),
        ("CAL,1,2", "field_count"),
        ("CAL,1,2,abc", "bad_field"),
        ("INFO,x", "bad_field"),
        ("BOOT,1", "unknown_type"),
    ],
)
def test_malformed_commands_are_rejected_with_their_reason(body: str, reason: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_command(unframe(strip(frame(body))))
    assert caught.value.reason == reason


def test_decoder_resynchronises_on_the_start_character_and_counts_the_garbage() -> None:
    decoder = LineDecoder()
    good = strip(frame("E,4,SAT"))
    assert decoder.decode(b"\x00\x17noise" + good) == SlotError(slot=4, code="SAT")
    assert decoder.rejected == {"garbage": 1}
    assert decoder.decode(b"no start at all") is None
    assert decoder.decode(good[:-1] + b"0" if not good.endswith(b"0") else good[:-1] + b"1") is None
    assert decoder.rejected == {"garbage": 1, "no_start": 1, "bad_checksum": 1}
    assert decoder.rejected_total == 3
    assert decoder.last_reject is not None
    assert decoder.last_reject.reason == "bad_checksum"


# --------------------------------------------------------------------------- fuzzing
# Hypothesis spends most of its time generating examples, so the mutation tests derive
# several mutants from each example with a Random seeded by a drawn integer (a failure
# reports the seed, so it replays exactly).

MUTANTS_PER_EXAMPLE = 6
_seeds = st.integers(min_value=0, max_value=2**32 - 1)

_grams = st.integers(min_value=-9_999_999, max_value=9_999_999).map(lambda tenths: tenths / 10)
_slot = st.one_of(
    st.builds(SlotWeight, _grams, st.integers(min_value=RAW_MIN, max_value=RAW_MAX)),
    st.just(SlotWeight(None, None)),
)
_tag = st.integers(0, 65535)
_messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Weights, st.integers(0, 2**32 - 1), st.lists(_slot, min_size=1, max_size=12).map(tuple)),
    st.builds(
        Info,
        firmware=st.text(alphabet="ABCXYZ019._+-", min_size=1, max_size=32),
        serial=st.text(alphabet="AZ09_-", min_size=1, max_size=32),
        slots=st.integers(1, 32),
        rate_hz=st.integers(1, 80),
        window=st.integers(1, 64),
    ),
    st.builds(Ack, tag=_tag, command=st.sampled_from(["RATE", "WIN", "TARE", "CAL", "INFO"]), ok=st.just(True)),
    st.builds(
        Ack,
        tag=_tag,
        command=st.sampled_from(["TARE", "CAL", "FOO"]),
        ok=st.just(False),
        reason=st.sampled_from(["BAD_ARG", "BAD_SLOT", "NO_LOAD", "CELL_FAULT", "UNKNOWN_CMD", "X", "E2"]),
    ),
    st.builds(SlotError, slot=st.integers(1, 32), code=st.sampled_from(["DISC", "SAT", "NONE"])),
)
_commands: st.SearchStrategy[ControllerCommand] = st.one_of(
    st.builds(SetRate, tag=_tag, hz=st.integers(1, 80)),
    st.builds(SetWindow, tag=_tag, samples=st.integers(1, 64)),
    st.builds(Tare, tag=_tag, slot=st.integers(1, 32)),
    st.builds(Calibrate, tag=_tag, slot=st.integers(1, 32), grams=_grams.map(abs)),
    st.builds(InfoRequest, tag=_tag),
)


def _decode_counted(decoder: LineDecoder, line: bytes) -> Message | None:
    """Decode one line and check the decoder's bookkeeping: a message, or one or two counted rejects."""
    before = decoder.rejected_total
    message = decoder.decode(line)
    added = decoder.rejected_total - before
    if message is None:
        assert added in (1, 2), f"a rejected line must be counted: {line!r}"
    else:
        assert added in (0, 1), f"a decoded line counts only garbage before it: {line!r}"
    return message


def reframe(body: bytes) -> bytes:
    """Any body (even a broken one) with the checksum it needs, so the field parsers see it."""
    return b"$%s*%04X" % (body, crc16_ccitt_false(body))


def mutate(line: bytes, rng: random.Random) -> bytes:
    """One to four byte-level mutations: insert, delete, replace, truncate, duplicate a run, swap neighbours."""
    data = bytearray(line)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(data))
        byte = rng.choice(b"$*,.-0123456789AEIWZ\r\n\x00\xff ") if rng.random() < 0.7 else rng.randrange(256)
        match rng.choice(["insert", "delete", "replace", "truncate", "duplicate", "swap"]):
            case "insert":
                data[at:at] = bytes([byte])
            case "delete" if data:
                del data[at % len(data)]
            case "replace" if data:
                data[at % len(data)] = byte
            case "truncate":
                del data[at:]
            case "duplicate":
                data[at:at] = data[at : at + rng.randint(1, 12)]
            case "swap" if len(data) > 1:
                i = at % (len(data) - 1)
                data[i], data[i + 1] = data[i + 1], data[i]
    return bytes(data)


@settings(max_examples=2500, deadline=None)
@given(st.binary(max_size=MAX_LINE + 50))
def test_fuzz_random_bytes_only_reject_and_are_counted(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        parse_message(data)
    _decode_counted(LineDecoder(), data)


@settings(max_examples=300, deadline=None)
@given(_messages)
def test_fuzz_every_valid_message_round_trips(message: Message) -> None:
    line = strip(encode_message(message))
    assert parse_message(line) == message
    decoder = LineDecoder()
    assert _decode_counted(decoder, line) == message
    assert decoder.rejected_total == 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_messages, _seeds)
def test_fuzz_a_changed_byte_in_the_body_is_always_rejected(message: Message, seed: int) -> None:
    """CRC-16 catches every error burst of up to 16 bits, so one changed byte never passes."""
    rng = random.Random(seed)
    original = strip(encode_message(message))
    star = original.rindex(b"*")
    for _ in range(MUTANTS_PER_EXAMPLE):
        line = bytearray(original)
        index = rng.randint(1, star - 1)
        line[index] = rng.choice([b for b in range(256) if b != line[index]])
        with pytest.raises(FrameError):
            parse_message(bytes(line))
        assert _decode_counted(LineDecoder(), bytes(line)) is None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_messages, _seeds)
def test_fuzz_mutated_lines_only_reject_and_are_counted(message: Message, seed: int) -> None:
    """Mutated lines, half of them re-checksummed so that the field parsers get the damage."""
    rng = random.Random(seed)
    original = strip(encode_message(message))
    decoder = LineDecoder()
    for index in range(MUTANTS_PER_EXAMPLE):
        line = mutate(original, rng)
        if index % 2:
            star = line.rfind(b"*")
            line = reframe(line[1:star] if star > 0 else line[1:])
        try:
            parsed: Message | None = parse_message(line)
        except FrameError:
            parsed = None
        decoded = _decode_counted(decoder, line)
        if parsed is not None:
            assert decoded == parsed


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_command_parser_only_rejects_random_bytes(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        parse_command(unframe(data))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_commands, _seeds)
def test_fuzz_command_parser_only_rejects_mutated_commands(command: ControllerCommand, seed: int) -> None:
    """Mutated commands, re-checksummed so that the firmware's field parsing gets the damage."""
    rng = random.Random(seed)
    body = strip(encode_command(command))[1:-5]
    for _ in range(MUTANTS_PER_EXAMPLE):
        with contextlib.suppress(FrameError):
            parse_command(unframe(reframe(mutate(body, rng))))


@settings(max_examples=200, deadline=None)
@given(_commands)
def test_fuzz_every_valid_command_round_trips(command: ControllerCommand) -> None:
    assert parse_command(unframe(strip(encode_command(command)))) == command
