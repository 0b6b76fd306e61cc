"""The hub's fast EventBatch decoder agrees with the wire contract: it takes a batch only as wire.decode would.

For every input: either :func:`decode_valid_batch` leaves it (None) or ``wire.decode`` accepts it too and returns an
identical batch (same values of the same types, same fields set). Valid batches of every kind must take the fast
path (else the path would be dead weight); near-misses of each rule must not be accepted by it alone.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any
from uuid import UUID

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.ingest.batch_decoder import MIRRORS, PAYLOAD_STRUCTS, decode_valid_batch
from storegate import wire

STREAM = "8c6a3f7e-2a1b-4c3d-9e8f-0a1b2c3d4e5f"
VALID_PAYLOADS: dict[str, dict[str, Any]] = {
    "environment.reading": {"quantity": "temperature", "value": 4.5, "unit": "Cel", "zone": "chiller-1"},
    "environment.alarm": {
        "state": "raised",
        "quantity": "temperature",
        "direction": "high",
        "limit": 8,
        "value": 9.5,
        "unit": "Cel",
        "since": "2025-03-03T09:00:00+01:00",
    },
    "outbox.loss": {"ranges": [{"first": 1, "last": 2}], "count": 2, "reason": "evicted"},
    "device.attached": {"profile": "scale", "address": "1-1.2", "identity": {"vendor_id": "1a86"}},
    "device.detached": {"reason": "unplugged", "address": "1-1.2"},
    "device.unknown": {"address": "1-1.3", "identity": {}},
    "device.error": {"error": "timeout", "failures": 2, "retry_in_s": 5},
    "device.stale": {"reason": "silent", "since": "2025-03-03T09:00:00Z"},
    "shelf.pick": {"slot": 3, "sku": "sku-1", "delta": -1, "count": 4, "weight_g": 812},
    "shelf.put": {"slot": 3, "delta": 2, "count": 6, "weight_g": 1218.5},
    "shelf.stock": {"slot": 3, "sku": "milk 1.5 l", "count": 6, "weight_g": 1218.5},
    "shelf.fault": {"slot": 3, "fault": "stuck"},
    "scan.sale": {"code": "5000112637922", "symbology": "ean13", "mode": "checkout", "gtin": "05000112637922"},
    "scan.receiving": {
        "code": "0105000112637922",
        "symbology": "gs1_128",
        "mode": "receiving",
        "quantity": 12,
        "batch": "L1",
        "expiry": "2025-04-01",
        "price": "2.50",
        "net_weight_g": 250,
        "ai": {"01": "05000112637922"},
    },
    "scan.count": {"code": "21157", "symbology": "code128", "mode": "stock_count", "quantity": 3},
    "door.opened": {"zone": "back", "open": True},
    "door.closed": {"open": False},
    "vendor.reading": {"frames": 3, "score": 0.25, "nested": [1, 2.0, None, {"big": 10**30}]},
}


def event_fields(seq: int = 1, kind: str = "scan.sale", **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "v": 1,
        "event_id": str(UUID(int=seq, version=4)),
        "store_id": "store-0001",
        "gateway_id": "gw-1",
        "stream": STREAM,
        "seq": seq,
        "device_id": "till-1",
        "kind": kind,
        "ts": "2025-03-03T09:00:00.123456Z",
        "payload": VALID_PAYLOADS.get(kind, {}),
    }
    fields.update(overrides)
    return fields


def batch_bytes(events: list[dict[str, Any]], **overrides: Any) -> bytes:
    batch: dict[str, Any] = {
        "v": 1,
        "store_id": "store-0001",
        "gateway_id": "gw-1",
        "sent_at": "2025-03-03T09:00:01Z",
        "events": events,
    }
    batch.update(overrides)
    return json.dumps(batch).encode()


def assert_agrees(raw: bytes) -> wire.EventBatch | None:
    """The fast path's answer, after checking it against wire.decode's."""
    fast = decode_valid_batch(raw)
    if fast is None:
        return None
    reference = wire.decode(wire.EventBatch, raw)  # raises WireError if the fast path took an invalid batch
    # repr tells 1 from 1.0 and a str from an enum member, which == would not.
    assert repr(fast) == repr(reference)
    assert fast.model_fields_set == reference.model_fields_set
    assert fast.sent_at.tzinfo is UTC
    for ours, theirs in zip(fast.events, reference.events, strict=True):
        assert ours.model_fields_set == theirs.model_fields_set
        assert repr(ours.payload) == repr(theirs.payload)
        assert ours.ts.tzinfo is theirs.ts.tzinfo is UTC
        assert ours.model_dump_json() == theirs.model_dump_json()
    return fast


@pytest.mark.parametrize("kind", sorted(VALID_PAYLOADS))
def test_a_valid_batch_of_each_kind_takes_the_fast_path_and_equals_the_wire_decoding(kind: str) -> None:
    raw = batch_bytes([event_fields(seq, kind) for seq in (1, 2, 3)])
    assert assert_agrees(raw) is not None


def test_a_batch_without_v_takes_the_fast_path_with_the_same_fields_set() -> None:
    event = event_fields()
    del event["v"]
    batch = json.loads(batch_bytes([event]))
    del batch["v"]
    decoded = assert_agrees(json.dumps(batch).encode())
    assert decoded is not None
    assert "v" not in decoded.model_fields_set
    assert "v" not in decoded.events[0].model_fields_set


def _set(path: str, value: Any) -> bytes:
    """A one-event batch with ``path`` ('event.x', 'payload.x', 'batch.x') set to ``value`` (``...``: removed)."""
    event = event_fields(kind="shelf.pick" if path.startswith("shelf.") else "scan.sale")
    batch = json.loads(batch_bytes([event]))
    where, _, name = path.partition(".")
    target = {"batch": batch, "event": event, "payload": event["payload"], "shelf": event["payload"]}[where]
    target = dict(target)
    if value is ...:
        del target[name]
    else:
        target[name] = value
    if where == "batch":
        batch = target
    elif where == "event":
        batch["events"] = [target]
    else:
        batch["events"] = [{**event, "payload": target}]
    return json.dumps(batch).encode()


NEAR_MISSES: list[tuple[str, Any]] = [
    ("batch.store_id", "store-0001\n"),
    ("batch.store_id", "Store-0001"),
    ("batch.v", 2),
    ("batch.v", 1.0),
    ("batch.sent_at", "2025-03-03T09:00:01"),
    ("batch.events", []),
    ("batch.extra", 1),
    ("event.store_id", "store-0002"),
    ("event.device_id", "till-1\n"),
    ("event.device_id", "-till"),
    ("event.kind", "scan"),
    ("event.kind", "scan.sale\n"),
    ("event.kind", "a." + "b" * 63),
    ("event.event_id", "8C6A3F7E2A1B4C3D9E8F0A1B2C3D4E5F"),
    ("event.event_id", "{8c6a3f7e-2a1b-4c3d-9e8f-0a1b2c3d4e5f}"),
    ("event.event_id", "not-a-uuid"),
    ("event.seq", 0),
    ("event.seq", 1.0),
    ("event.seq", "1"),
    ("event.seq", 2**63),
    ("event.seq", True),
    ("event.ts", "2025-03-03T09:00:00.1234567Z"),
    ("event.ts", "2025-03-03T09:00:00.9999995Z"),
    ("event.ts", "2025-03-03T09:00:00,5Z"),
    ("event.ts", "2025-03-03 09:00:00+01:00"),
    ("event.ts", "2025-03-03t09:00:00z"),
    ("event.ts", 1741000000),
    ("event.ts", "2025-03-03T09:00:00"),
    ("event.ts", "0001-01-01T00:00:00+01:00"),
    ("event.ts", "2025-02-29T09:00:00Z"),
    ("event.payload", ...),
    ("event.payload", []),
    ("event.payload", "{}"),
    ("event.extra", None),
    ("payload.code", ""),
    ("payload.code", None),
    ("payload.quantity", 0),
    ("payload.quantity", 2**31),
    ("payload.quantity", 2.0),
    ("payload.quantity", "2"),
    ("payload.gtin", "0500011263792"),
    ("payload.gtin", "05000112637922\n"),
    ("payload.gtin", "\uff10" * 14),  # fullwidth digits: \d matches them, [0-9] does not,
    ("payload.price", "2."),
    ("payload.price", "2.50\n"),
    ("payload.expiry", "2025-4-01"),
    ("payload.ai", {"01": 5}),
    ("payload.net_weight_g", -1),
    ("payload.net_weight_g", "250"),
    ("payload.symbology_guessed", "true"),
    ("payload.symbology_guessed", 1),
    ("payload.mode", "sale"),
    ("payload.unknown", 1),
    ("shelf.sku", ".."),
    ("shelf.sku", "."),
    ("shelf.sku", "a/b"),
    ("shelf.sku", "a\x7fb"),
    ("shelf.sku", "x" * 65),
    ("shelf.sku", ""),
    ("shelf.slot", 256),
    ("shelf.delta", -(2**31)),
    ("shelf.count", -1),
    ("shelf.weight_g", "812"),
    ("shelf.weight_g", None),
]


@pytest.mark.parametrize(("path", "value"), NEAR_MISSES)
def test_near_misses_of_each_rule_are_never_taken_by_the_fast_path_alone(path: str, value: Any) -> None:
    assert_agrees(_set(path, value))


@pytest.mark.parametrize(
    "raw",
    [
        batch_bytes([event_fields(kind="vendor.reading", payload={"x": float("nan")})]),  # json.dumps writes NaN
        batch_bytes([event_fields(kind="vendor.reading")]).replace(b'"frames": 3', b'"frames": 1e999'),
        batch_bytes([event_fields(kind="shelf.put")]).replace(b'"weight_g": 1218.5', b'"weight_g": 1e999'),
        batch_bytes([event_fields(kind="shelf.put")]).replace(b'"weight_g": 1218.5', b'"weight_g": 12.12345678'),
        batch_bytes([event_fields(kind="environment.reading", payload={"quantity": "co2", "value": 1, "unit": "Cel"})]),
        batch_bytes([event_fields(kind="environment.alarm", payload={"state": "raised"})]),
        batch_bytes([event_fields(kind="vendor.reading", payload={"x": "NaN and Infinity in a string"})]),
        batch_bytes([event_fields(seq, "scan.sale") for seq in range(1, wire.MAX_BATCH_EVENTS + 2)]),
        batch_bytes([event_fields()]).replace(b'"seq": 1', b'"seq": 1, "seq": 0'),
        batch_bytes([event_fields()]).replace(b'"seq": 1', b'"seq": 0, "seq": 1'),
        batch_bytes([event_fields()]).replace(b'"mode": "checkout"', b'"mode": "checkout", "mode": "x"'),
        batch_bytes([event_fields()])[:-1],
        b"[]",
        b"",
    ],
)
def test_numbers_duplicates_and_broken_json_agree_with_the_wire(raw: bytes) -> None:
    assert_agrees(raw)


def test_duplicate_keys_take_the_last_value_as_the_wire_does() -> None:
    raw = batch_bytes([event_fields()]).replace(b'"mode": "checkout"', b'"mode": "receiving", "mode": "checkout"')
    decoded = assert_agrees(raw)
    assert decoded is not None
    assert decoded.events[0].payload["mode"] == "checkout"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
FIELDS = [*(f"event.{name}" for name in event_fields()), *(f"payload.{n}" for n in VALID_PAYLOADS["scan.sale"])]


@settings(max_examples=300, deadline=None)
@given(path=st.sampled_from([*FIELDS, "payload.quantity", "shelf.sku", "shelf.weight_g"]), value=JSON_VALUES)
def test_any_value_in_any_field_agrees_with_the_wire(path: str, value: Any) -> None:
    assert_agrees(_set(path, value))


@pytest.mark.parametrize(("model", "struct"), list(MIRRORS.items()))
def test_each_payload_struct_has_its_models_fields_required_alike(model: type[wire.WireModel], struct: Any) -> None:
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    assert {f.name for f in info.fields} == set(model.model_fields)
    assert {f.name for f in info.fields if f.required} == {n for n, f in model.model_fields.items() if f.is_required()}


def test_each_kind_with_a_struct_is_mirrored_from_its_wire_model() -> None:
    for kind, struct in PAYLOAD_STRUCTS.items():
        assert MIRRORS[wire.PAYLOAD_MODELS[kind]] is struct


NUMBER_AND_STRING_TEXTS = [
    "0.1",
    "0.30000000000000004",
    "1e-7",
    "1E+2",
    "-0",
    "-0.0",
    "5e-324",
    "1e-400",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    "123456789012345678901234567890",
    "-123456789012345678901234567890.5",
    "9223372036854775808",
    "18446744073709551616",
    '"\\ud83d\\ude00"',
    '"\\ud800"',
    '"\\u0000"',
    '"caf\\u00e9 \\/ \\t"',
    '"\u00e9"',
]


@pytest.mark.parametrize("text", NUMBER_AND_STRING_TEXTS)
def test_numbers_and_strings_of_a_payload_are_read_to_the_same_values(text: str) -> None:
    """msgspec reads the payload's dict: every value it reads must be the one pydantic's parser reads."""
    raw = batch_bytes([event_fields(kind="vendor.reading", payload={"x": "HERE", "y": ["HERE"]})])
    assert_agrees(raw.replace(b'"HERE"', text.encode()))
