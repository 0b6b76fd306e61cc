"""The hub's fast path for an EventBatch: msgspec decodes a valid batch in one pass, wire.decode judges the rest.

``wire.decode(EventBatch, raw)`` parses the JSON with pydantic, builds each event's payload as a dict, then
validates that dict a second time against its kind's model (``Event``'s after-validator): about 8.5 µs an event
in a process of its own, a quarter of the hub's CPU. Here msgspec decodes the batch into structs that hold the
same rules as the wire models, or stricter ones, each payload into a dict (the same values pydantic's parser reads:
tested), and then checks each payload of the common kinds against a struct of its kind, in C.

The rule that keeps the two paths equal: :func:`decode_valid_batch` accepts a batch only if ``wire.decode``
accepts it too, and then returns an equal ``wire.EventBatch``. Anything it is unsure of (a rule here is stricter,
a field is missing, a kind has no struct, a time is written in another form) returns None, and the caller decodes
the message with ``wire.decode``, which accepts it or says why not in the wire contract's own words. So the
error messages, counters and set-aside events of invalid batches are unchanged. tests/hub/ingest/
test_batch_decoder.py checks the equality on valid batches of every kind and on near-misses of each rule.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, TypeVar
from uuid import UUID

import msgspec
from pydantic import ValidationError

from hub.errors import HubError
from storegate import wire

# A finite float: msgspec refuses a JSON number beyond a float's range itself, these bounds refuse nothing else.
_FLOAT_MAX: Final = sys.float_info.max
Finite = Annotated[float, msgspec.Meta(ge=-_FLOAT_MAX, le=_FLOAT_MAX)]
NonNegative = Annotated[float, msgspec.Meta(ge=0, le=_FLOAT_MAX)]

# What the ids and kinds must match, whole (pydantic reads the wire's ``^...$`` as the whole text; Python's ``$``
# would also match before a final newline, so here it is fullmatch). Checked in Python, once per distinct value
# (_Known): a gateway sends the same few thousand ids all day, and msgspec's own pattern check costs a call into
# ``re`` for every field of every event.
_SEGMENT: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_DEVICE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_KIND_NAME: Final = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
# Aware times (``tz=True``): msgspec reads RFC 3339 and nothing else; a time pydantic also reads in another form
# (a number of seconds, a comma) is refused here and left to wire.decode. The one text msgspec reads otherwise,
# more than six digits of a second (it rounds, pydantic truncates), is found in the raw bytes first (_LEFT_TO_WIRE).
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
Seq = Annotated[int, msgspec.Meta(ge=1, le=wire.INT64_MAX)]
ItemCount = Annotated[int, msgspec.Meta(ge=0, le=wire.INT32_MAX)]
ItemDelta = Annotated[int, msgspec.Meta(ge=-wire.INT32_MAX, le=wire.INT32_MAX)]
# wire.SkuId: 1 to 64 characters, not a dot segment, none of the characters check_sku_id forbids.
SkuId = Annotated[str, msgspec.Meta(pattern=r"^(?!\.\.?\Z)[^/\\?#%\x00-\x1f\x7f]{1,64}\Z")]
Zone = Annotated[str, msgspec.Meta(max_length=64)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A payload or message struct: unknown fields refused, as WireModel's ``extra="forbid"``; never in a cycle, so
    not tracked by the garbage collector (fewer objects for its passes to walk)."""


class ScanPayload(_Strict):
    """wire.Scan."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    symbology: Literal["ean13", "ean8", "upca", "upce", "code128", "gs1_128", "gs1_datamatrix", "gs1_databar"]
    mode: Literal["checkout", "receiving", "stock_count"]
    symbology_guessed: bool = False
    gtin: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{14}\Z")] | None = None
    quantity: Annotated[int, msgspec.Meta(ge=1, le=wire.INT32_MAX)] = 1
    batch: Annotated[str, msgspec.Meta(max_length=20)] | None = None
    expiry: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")] | None = None
    serial: Annotated[str, msgspec.Meta(max_length=20)] | None = None
    net_weight_g: NonNegative | None = None
    price: Annotated[str, msgspec.Meta(pattern=r"^[0-9]+(\.[0-9]+)?\Z")] | None = None
    ai: dict[str, str] = {}
    gs1_incomplete: bool = False
    gs1_problem: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class ShelfChangePayload(_Strict):
    """wire.ShelfChange."""

    slot: Annotated[int, msgspec.Meta(ge=1, le=255)]
    delta: ItemDelta
    count: ItemCount
    weight_g: Finite
    sku: SkuId | None = None


class ShelfStockPayload(_Strict):
    """wire.ShelfStock."""

    slot: Annotated[int, msgspec.Meta(ge=1, le=255)]
    weight_g: Finite
    sku: SkuId | None = None
    count: ItemCount | None = None


class EnvironmentReadingPayload(_Strict):
    """wire.EnvironmentReading; its unit is checked against its quantity after decoding (:func:`_reading_ok`)."""

    quantity: Literal["temperature", "humidity", "co2", "light"]
    value: Finite
    unit: Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
    zone: Zone | None = None


class DoorChangePayload(_Strict):
    """wire.DoorChange."""

    open: bool
    zone: Zone | None = None


# wire.UNIT_OF by the quantity's text, without making the enum member for each reading.
_UNIT_OF_QUANTITY: Final[dict[str, str]] = {quantity.value: unit for quantity, unit in wire.UNIT_OF.items()}


def _reading_ok(payload: EnvironmentReadingPayload) -> bool:
    return payload.unit == _UNIT_OF_QUANTITY[payload.quantity]


# The kinds decoded here, most of the events; the payload of any other kind is checked by wire.check_payload.
PAYLOAD_STRUCTS: Final[dict[str, type[_Strict]]] = {
    wire.EventKind.SCAN_SALE: ScanPayload,
    wire.EventKind.SCAN_RECEIVING: ScanPayload,
    wire.EventKind.SCAN_COUNT: ScanPayload,
    wire.EventKind.SHELF_PICK: ShelfChangePayload,
    wire.EventKind.SHELF_PUT: ShelfChangePayload,
    wire.EventKind.SHELF_STOCK: ShelfStockPayload,
    wire.EventKind.ENVIRONMENT_READING: EnvironmentReadingPayload,
    wire.EventKind.DOOR_OPENED: DoorChangePayload,
    wire.EventKind.DOOR_CLOSED: DoorChangePayload,
}
# The struct each wire model is mirrored by (a test holds their fields equal).
MIRRORS: Final[dict[type[wire.WireModel], type[_Strict]]] = {
    wire.Scan: ScanPayload,
    wire.ShelfChange: ShelfChangePayload,
    wire.ShelfStock: ShelfStockPayload,
    wire.EnvironmentReading: EnvironmentReadingPayload,
    wire.DoorChange: DoorChangePayload,
}


class _Event(_Strict):
    event_id: UUID
    store_id: str
    gateway_id: str
    stream: UUID
    seq: Seq
    device_id: str
    kind: str
    ts: AwareTime
    # A dict as pydantic's parser makes it (msgspec reads JSON numbers and strings to the same values; one it
    # cannot hold, 1e999, fails the batch here); then checked by its kind's struct. Absent (an empty payload,
    # which most kinds refuse) goes to wire.decode.
    payload: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    v: Literal[1] | msgspec.UnsetType = msgspec.UNSET


class _Batch(_Strict):
    store_id: str
    gateway_id: str
    sent_at: AwareTime
    events: Annotated[list[_Event], msgspec.Meta(min_length=1, max_length=wire.MAX_BATCH_EVENTS)]
    v: Literal[1] | msgspec.UnsetType = msgspec.UNSET


M = TypeVar("M", bound=wire.WireModel)
_BATCH_DECODER: Final = msgspec.json.Decoder(_Batch)
# A time with more than six digits of a second, which msgspec rounds and pydantic truncates: such a time is left to
# wire.decode (and so is a float of two integer digits and seven decimals after a key, which the scan cannot tell
# from one). NaN and Infinity, which wire.decode refuses, msgspec refuses itself: they are not JSON.
_LEFT_TO_WIRE: Final = re.compile(rb":[0-9][0-9]\.[0-9]{7}")
# How many distinct valid ids and kinds each _Known remembers before it starts again (a few MB at most).
KNOWN_LIMIT: Final = 100_000


class _Known:
    """Strings known to match a pattern whole: each distinct one is matched once (until ``limit`` are held)."""

    def __init__(self, pattern: re.Pattern[str], limit: int = KNOWN_LIMIT) -> None:
        self._pattern = pattern
        self._limit = limit
        self._valid: set[str] = set()

    def __contains__(self, value: str) -> bool:
        if value in self._valid:
            return True
        if self._pattern.fullmatch(value) is None:
            return False
        if len(self._valid) >= self._limit:
            self._valid.clear()
        self._valid.add(value)
        return True


_SEGMENTS: Final = _Known(_SEGMENT)
_DEVICE_IDS: Final = _Known(_DEVICE_ID)
# wire.EventKindName also caps a kind at 64 characters.
_KIND_NAMES: Final = _Known(re.compile(rf"(?=.{{0,64}}\Z){_KIND_NAME.pattern}", re.DOTALL))
_EVENT_FIELDS: Final = frozenset(wire.Event.model_fields)
_BATCH_FIELDS: Final = frozenset(wire.EventBatch.model_fields)


class LeftToWireDecode(HubError):
    """This path leaves the batch to wire.decode (raised and caught here only)."""


def decode_valid_batch(raw: bytes) -> wire.EventBatch | None:
    """The EventBatch ``wire.decode`` would return for ``raw``, or None where this path leaves it to wire.decode.

    None says nothing about validity: the caller then decodes ``raw`` with ``wire.decode``.
    """
    if len(raw) > wire.MAX_MESSAGE_BYTES or _LEFT_TO_WIRE.search(raw) is not None:
        return None
    try:
        batch = _BATCH_DECODER.decode(raw)
        if batch.store_id not in _SEGMENTS or batch.gateway_id not in _SEGMENTS:
            return None
        if any(event.store_id != batch.store_id or event.gateway_id != batch.gateway_id for event in batch.events):
            return None
        events = [_event(event) for event in batch.events]
        sent_at = _utc(batch.sent_at)
    except (msgspec.MsgspecError, ValidationError, ValueError, OverflowError, LeftToWireDecode):
        return None
    fields = {"v": 1, "store_id": batch.store_id, "gateway_id": batch.gateway_id, "sent_at": sent_at, "events": events}
    return _built(wire.EventBatch, fields, _BATCH_FIELDS if batch.v is not msgspec.UNSET else _BATCH_FIELDS - {"v"})


def _event(event: _Event) -> wire.Event:
    if event.device_id not in _DEVICE_IDS or event.kind not in _KIND_NAMES:
        raise LeftToWireDecode
    payload = event.payload
    if payload is msgspec.UNSET:
        raise LeftToWireDecode
    struct = PAYLOAD_STRUCTS.get(event.kind)
    if struct is None:
        wire.check_payload(event.kind, payload)
    else:
        checked = msgspec.convert(payload, struct)
        if isinstance(checked, EnvironmentReadingPayload) and not _reading_ok(checked):
            raise LeftToWireDecode
    fields = {
        "v": 1,
        "event_id": event.event_id,
        "store_id": event.store_id,
        "gateway_id": event.gateway_id,
        "stream": event.stream,
        "seq": event.seq,
        "device_id": event.device_id,
        "kind": event.kind,
        "ts": _utc(event.ts),
        "payload": payload,
    }
    return _built(wire.Event, fields, _EVENT_FIELDS if event.v is not msgspec.UNSET else _EVENT_FIELDS - {"v"})


def _utc(value: datetime) -> datetime:
    # What wire.UtcDatetime makes of the same text: the instant, in datetime.UTC. A time before year 1 in UTC
    # raises OverflowError, which wire.decode refuses.
    return value.astimezone(UTC)


def _built(model: type[M], fields: dict[str, Any], fields_set: frozenset[str]) -> M:
    """An instance of ``model`` holding ``fields`` (validated above), as ``model_construct`` builds it, faster."""
    instance = model.__new__(model)
    object.__setattr__(instance, "__dict__", fields)
    object.__setattr__(instance, "__pydantic_fields_set__", set(fields_set))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance
