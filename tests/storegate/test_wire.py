"""The wire contract: topics round-trip, messages validate strictly, decode rejects with a reason."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from storegate import wire

SEGMENTS = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,20}\Z")


def make_event(seq: int = 1, **overrides: object) -> wire.Event:
    fields: dict[str, object] = {
        "event_id": uuid4(),
        "store_id": "store-1",
        "gateway_id": "gw-1",
        "stream": uuid4(),
        "seq": seq,
        "device_id": "chiller-1",
        "kind": "environment.reading",
        "ts": datetime(2026, 11, 22, 12, 0, tzinfo=UTC),
        "payload": {"quantity": "temperature", "value": 3.5, "unit": "Cel", "zone": "chiller-1"},
    }
    fields.update(overrides)
    return wire.Event.model_validate(fields)


@given(store=SEGMENTS, gateway=SEGMENTS, channel=st.sampled_from(list(wire.Channel)))
def test_topic_round_trips(store: str, gateway: str, channel: wire.Channel) -> None:
    built = wire.topic(store, gateway, channel)
    assert built.startswith("storegate/v1/")
    assert wire.parse_topic(built) == wire.Topic(store, gateway, channel)


@pytest.mark.parametrize(
    "bad",
    [
        "storegate/v2/s/g/events",
        "storegate/v1/s/g/unknown",
        "storegate/v1/S/g/events",
        "storegate/v1/s/g/events/extra",
        "storegate/v1/+/g/events",
        "other/v1/s/g/events",
        "",
    ],
)
def test_parse_topic_rejects_foreign_topics(bad: str) -> None:
    with pytest.raises(wire.TopicError):
        wire.parse_topic(bad)


def test_topic_refuses_wildcards_in_ids() -> None:
    with pytest.raises(wire.TopicError, match="store_id"):
        wire.topic("store/#", "gw-1", wire.Channel.EVENTS)


def test_subscription_filters() -> None:
    assert wire.subscription(wire.Channel.EVENTS) == "storegate/v1/+/+/events"
    assert wire.subscription(wire.Channel.ACK, store_id="s1", gateway_id="g1") == "storegate/v1/s1/g1/ack"


def test_event_timestamps_are_normalised_to_utc() -> None:
    local = datetime(2026, 11, 22, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    event = make_event(ts=local)
    assert event.ts == datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert event.ts.utcoffset() == timedelta(0)


def test_naive_timestamps_are_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        make_event(ts=datetime(2026, 11, 22, 12, 0))


def test_known_kind_payload_is_validated() -> None:
    with pytest.raises(ValueError, match="unit"):
        make_event(payload={"quantity": "temperature", "value": 3.5, "unit": "F"})
    with pytest.raises(ValueError, match="finite"):
        make_event(payload={"quantity": "temperature", "value": float("nan"), "unit": "Cel"})


def test_unknown_kind_keeps_free_payload() -> None:
    event = make_event(kind="shelf.sample", payload={"slot": 3, "count": -2})
    assert event.typed_payload() is None
    assert event.payload == {"slot": 3, "count": -2}


def test_batch_round_trip_keeps_every_field() -> None:
    events = [make_event(seq) for seq in range(1, 4)]
    batch = wire.EventBatch(store_id="store-1", gateway_id="gw-1", sent_at=wire.utc_now(), events=events)
    assert wire.decode(wire.EventBatch, wire.encode(batch)) == batch


def test_batch_refuses_events_of_another_gateway() -> None:
    with pytest.raises(ValueError, match="not to the batch"):
        wire.EventBatch(store_id="store-1", gateway_id="gw-2", sent_at=wire.utc_now(), events=[make_event()])


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00\xffnot json", "malformed_json"),
        (b"[1, 2]", "invalid"),
        (b'{"v": 1}', "invalid"),
        (
            json.dumps(
                {"v": 2, "store_id": "s", "gateway_id": "g", "sent_at": "2026-01-01T00:00:00Z", "events": []}
            ).encode(),
            "invalid",
        ),
        (b" " * (wire.MAX_MESSAGE_BYTES + 1), "too_large"),
    ],
)
def test_decode_rejects_with_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.decode(wire.EventBatch, raw)
    assert caught.value.reason == reason


def _batch_with_payload(payload_json: str) -> bytes:
    event = make_event(kind="shelf.sample", payload={"marker": 1})
    batch = wire.EventBatch(store_id="store-1", gateway_id="gw-1", sent_at=wire.utc_now(), events=[event])
    return wire.encode(batch).replace(b'{"marker":1}', payload_json.encode())


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_number_in_a_free_form_payload_is_invalid(number: str) -> None:
    # pydantic's parser takes these tokens; PostgreSQL's json type does not (the unit failed there).
    raw = _batch_with_payload(f'{{"reading":[1,{{"value":{number}}}]}}')
    with pytest.raises(wire.WireError) as caught:
        wire.decode(wire.EventBatch, raw)
    assert caught.value.reason == "invalid"
    assert "NaN or Infinity is not a JSON number" in caught.value.detail


def test_the_words_nan_and_infinity_in_strings_are_fine_and_broken_json_stays_malformed() -> None:
    batch = wire.decode(wire.EventBatch, _batch_with_payload('{"product":"NaNa Infinity bar"}'))
    assert batch.events[0].payload == {"product": "NaNa Infinity bar"}
    with pytest.raises(wire.WireError) as caught:
        wire.decode(wire.EventBatch, _batch_with_payload('{"value":NaN,'))
    assert caught.value.reason == "malformed_json"


def test_extra_fields_are_rejected() -> None:
    ack = wire.Ack(
        store_id="s", gateway_id="g", stream=uuid4(), through_seq=3, stored=3, duplicates=0, ts=wire.utc_now()
    )
    data = json.loads(wire.encode(ack))
    data["surprise"] = True
    with pytest.raises(wire.WireError, match="surprise"):
        wire.decode(wire.Ack, json.dumps(data).encode())


@given(st.binary(max_size=512))
def test_decode_never_raises_anything_but_wire_error(raw: bytes) -> None:
    for model in wire.MESSAGE_OF_CHANNEL.values():
        with contextlib.suppress(wire.WireError):
            wire.decode(model, raw)


@pytest.mark.parametrize(
    ("kind", "priority"),
    [
        ("security.motion", wire.Priority.SECURITY),
        ("scan.sale", wire.Priority.SALES),
        ("shelf.pick", wire.Priority.SALES),
        ("device.attached", wire.Priority.DEVICE),
        ("environment.reading", wire.Priority.TELEMETRY),
        ("brand_new.kind", wire.Priority.DEVICE),
    ],
)
def test_priorities_by_family(kind: str, priority: wire.Priority) -> None:
    assert wire.priority_of(kind) is priority


def test_loss_record_count_must_match_its_ranges() -> None:
    loss = wire.DataLoss(
        ranges=[wire.SeqRange(first=3, last=5), wire.SeqRange(first=9, last=9)], count=4, reason="evicted"
    )
    assert [r.size for r in loss.ranges] == [3, 1]
    with pytest.raises(ValueError, match="does not match"):
        wire.DataLoss(ranges=[wire.SeqRange(first=3, last=5)], count=2, reason="evicted")
    with pytest.raises(ValueError, match="ends before it starts"):
        wire.SeqRange(first=5, last=3)


def test_loss_event_payload_is_validated_by_kind() -> None:
    payload = {"ranges": [{"first": 1, "last": 10}], "count": 10, "reason": "not_held"}
    event = make_event(kind="outbox.loss", payload=payload)
    assert isinstance(event.typed_payload(), wire.DataLoss)
    with pytest.raises(ValueError, match="reason"):
        make_event(kind="outbox.loss", payload={**payload, "reason": "because"})


# --------------------------------------------------------------------------- bounds the hub's columns hold


def _batch_of(event: dict[str, object]) -> bytes:
    """A batch holding one event given as JSON-ready fields (numbers the models would refuse to build)."""
    batch = {"v": 1, "store_id": "store-1", "gateway_id": "gw-1", "sent_at": "2026-11-22T12:00:00Z"}
    return json.dumps({**batch, "events": [event]}).encode()


def _event_fields(**overrides: object) -> dict[str, object]:
    fields = json.loads(make_event().model_dump_json())
    fields.update(overrides)
    assert isinstance(fields, dict)
    return fields


def _shelf(kind: str, payload: dict[str, object]) -> dict[str, object]:
    return _event_fields(kind=kind, device_id="shelf-1", payload=payload)


@pytest.mark.parametrize(
    ("event", "where"),
    [
        # The finding: one of these made the whole batch fail at the hub with storage_error.
        pytest.param(_event_fields(seq=2**63), "seq", id="seq 2^63"),
        pytest.param(
            _shelf("shelf.stock", {"slot": 1, "count": 3 * 10**9, "weight_g": 1.0}), "count", id="shelf count 3e9"
        ),
        pytest.param(
            _shelf("shelf.pick", {"slot": 1, "delta": -(2**31), "count": 0, "weight_g": 0.0}), "delta", id="delta"
        ),
        pytest.param(
            _event_fields(
                kind="scan.sale",
                device_id="scanner-1",
                payload={"code": "4006381333931", "symbology": "ean13", "mode": "checkout", "quantity": 2**31},
            ),
            "quantity",
            id="scan quantity 2^31",
        ),
        pytest.param(
            _event_fields(
                kind="outbox.loss",
                payload={"ranges": [{"first": 1, "last": 2**63}], "count": 2**63, "reason": "evicted"},
            ),
            "last",
            id="loss range past int64",
        ),
        pytest.param(_event_fields(ts="0001-01-01T00:00:00+01:00"), "ts", id="ts before year 1 in UTC"),
        pytest.param(_event_fields(kind="x.sample", payload={"value": "1e999"}), "payload", id="1e999 free-form"),
        pytest.param(
            _event_fields(payload={"quantity": "temperature", "value": "1e999", "unit": "Cel"}), "value", id="1e999"
        ),
    ],
)
def test_a_number_past_what_the_hub_stores_is_invalid_never_a_crash(event: dict[str, object], where: str) -> None:
    raw = _batch_of(event).replace(b'"1e999"', b"1e999")  # a JSON number too large for a float
    with pytest.raises(wire.WireError) as caught:
        wire.decode(wire.EventBatch, raw)
    assert caught.value.reason == "invalid"
    assert where in caught.value.detail


def test_the_largest_numbers_the_hub_stores_are_valid() -> None:
    raw = _batch_of(_shelf("shelf.stock", {"slot": 1, "count": wire.INT32_MAX, "weight_g": 1.0}))
    assert wire.decode(wire.EventBatch, raw).events[0].payload["count"] == wire.INT32_MAX
    raw = _batch_of(_event_fields(seq=wire.INT64_MAX))
    assert wire.decode(wire.EventBatch, raw).events[0].seq == wire.INT64_MAX


@pytest.mark.parametrize("field", ["outbox_depth", "published_total", "outbox_bytes"])
def test_health_counters_past_64_bits_are_invalid(field: str) -> None:
    health = {
        "store_id": "store-1",
        "gateway_id": "gw-1",
        "ts": "2026-11-22T12:00:00Z",
        "outbox_depth": 0,
        "published_total": 0,
        "acked_total": 0,
        "resent_total": 0,
        "reconnects_total": 0,
        field: 2**64,
    }
    with pytest.raises(wire.WireError, match=field):
        wire.decode(wire.GatewayHealth, json.dumps(health).encode())


def test_an_ack_mark_past_64_bits_is_invalid() -> None:
    ack = {
        "store_id": "store-1",
        "gateway_id": "gw-1",
        "stream": str(uuid4()),
        "through_seq": 2**63,
        "stored": 0,
        "duplicates": 0,
        "ts": "2026-11-22T12:00:00Z",
    }
    with pytest.raises(wire.WireError, match="through_seq"):
        wire.decode(wire.Ack, json.dumps(ack).encode())


@pytest.mark.parametrize("sku", [".", "..", "A/B", "A\\B", "A?B", "A#B", "50%", "A\tB"])
def test_shelf_events_refuse_sku_ids_that_are_not_one_url_path_segment(sku: str) -> None:
    with pytest.raises(ValidationError, match="SKU id"):
        wire.ShelfStock(slot=1, sku=sku, count=1, weight_g=1.0)


def test_shelf_events_carry_sku_ids_with_spaces_and_dots_inside() -> None:
    assert wire.ShelfStock(slot=1, sku="BANK CHARGES", weight_g=1.0).sku == "BANK CHARGES"
    assert wire.ShelfStock(slot=1, sku="...", weight_g=1.0).sku == "..."
