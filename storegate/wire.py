"""The wire contract between edge agents and the hub.

This module imports only the standard library and pydantic, so the hub and the
agent share it without importing each other. Every message that crosses MQTT
is one frozen pydantic model here; every topic is built and parsed here.
``docs/protocol.md`` documents the same contract for people.

Topic layout (one versioned root, one subtree per store and gateway)::

    storegate/v1/{store_id}/{gateway_id}/events            agent -> hub  EventBatch     QoS 1
    storegate/v1/{store_id}/{gateway_id}/ack               hub -> agent  Ack            QoS 1
    storegate/v1/{store_id}/{gateway_id}/status            agent -> hub  GatewayStatus  QoS 1, retained
    storegate/v1/{store_id}/{gateway_id}/health            agent -> hub  GatewayHealth  QoS 0, retained
    storegate/v1/{store_id}/{gateway_id}/commands          hub -> agent  Command        QoS 1
    storegate/v1/{store_id}/{gateway_id}/command_results   agent -> hub  CommandResult  QoS 1
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Final, Literal, TypeVar
from uuid import UUID

import pydantic_core
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    model_validator,
)

PROTOCOL_VERSION: Final = 1
TOPIC_ROOT: Final = "storegate/v1"

# A garbled or hostile payload is rejected before it is parsed: the largest
# legitimate message is a full EventBatch, far below this.
MAX_MESSAGE_BYTES: Final = 1024 * 1024
MAX_BATCH_EVENTS: Final = 1000

# The bounds of every integer on the wire: what the hub's columns hold (SQL INTEGER is 32 bits, BIGINT 64 bits on
# PostgreSQL, and SQLite refuses anything past 64 bits). A number beyond them is refused here as ``invalid``, as
# one bad message, instead of failing the hub's whole transaction later as a storage error.
INT32_MAX: Final = 2**31 - 1
INT64_MAX: Final = 2**63 - 1
# A sequence number of a stream (BIGINT at the hub), counted from 1.
Seq = Annotated[int, Field(ge=1, le=INT64_MAX)]
# How far a stream is acknowledged: a seq, or 0 before the first.
SeqMark = Annotated[int, Field(ge=0, le=INT64_MAX)]
# Items or units of stock (an INTEGER column at the hub: shelf levels, ledger quantities).
ItemCount = Annotated[int, Field(ge=0, le=INT32_MAX)]
# A change of items on a slot, signed; its size is bounded like the count.
ItemDelta = Annotated[int, Field(ge=-INT32_MAX, le=INT32_MAX)]
# A running total a gateway reports about itself (events published, reconnects, bytes).
Total = Annotated[int, Field(ge=0, le=INT64_MAX)]

_SEGMENT = r"[a-z0-9][a-z0-9_-]{0,62}"
# A whole store or gateway id, for validators outside the wire models (API path parameters).
SEGMENT_PATTERN: Final = rf"^{_SEGMENT}$"
# Store and gateway ids are topic segments: lower case, no MQTT wildcards or slashes.
StoreId = Annotated[str, Field(pattern=SEGMENT_PATTERN, description="store id, e.g. 'store-0042'")]
GatewayId = Annotated[str, Field(pattern=SEGMENT_PATTERN, description="gateway id, e.g. 'gw-1'")]
# Characters an SKU id cannot hold: it is one URL path segment (``/skus/{sku_id}``). "/" and "\\" (which
# browsers and WHATWG URL parsers read as "/") split it, "?" and "#" end the path when a client does not
# encode them, "%" is read as an escape; control characters are line noise.
_SKU_ID_FORBIDDEN: Final = re.compile(r"[/\\?#%\x00-\x1f\x7f]")


def check_sku_id(value: str) -> str:
    """``value`` if it is safe as one URL path segment; ValueError saying why otherwise."""
    if value in (".", ".."):
        # Every HTTP client normalises dot segments away: /skus/.. would fetch /, never this SKU.
        raise ValueError(f"SKU id {value!r} is a dot segment that HTTP clients remove from a URL path")
    if _SKU_ID_FORBIDDEN.search(value) is None:  # the usual id: one scan, no list built
        return value
    shown = ", ".join(repr(char) for char in sorted(set(_SKU_ID_FORBIDDEN.findall(value))))
    raise ValueError(f"SKU id {value!r} has {shown}: a SKU id must be safe as one URL path segment")


# The retailer's code of an article, as the catalog and shelf events name it.
SkuId = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(check_sku_id)]
DEVICE_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
DeviceId = Annotated[
    str,
    Field(
        pattern=DEVICE_ID_PATTERN,
        description="device id, stable across unplug and replug, e.g. 'fridge-1' or 'usb-1a86:7523-A1B2'",
    ),
]
EventKindName = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$",
        max_length=64,
        description="dotted event kind; the first segment is its family, e.g. 'environment.reading'",
    ),
]


def _as_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+01:00 is a valid aware datetime whose UTC is before year 1: pydantic passes on
        # only ValueError as a validation error, anything else would escape decode() as a crash.
        raise ValueError(f"{value.isoformat()} is outside the years 1 to 9999 in UTC") from None


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_as_utc)]


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class WireModel(BaseModel):
    """Base of every message: immutable, and unknown fields are an error."""

    # No float on the wire is infinite or NaN: JSON has neither, and PostgreSQL's json type refuses them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- topics


class Channel(StrEnum):
    """The last topic segment: which conversation a message belongs to."""

    EVENTS = "events"
    ACK = "ack"
    STATUS = "status"
    HEALTH = "health"
    COMMANDS = "commands"
    COMMAND_RESULTS = "command_results"


class TopicError(ValueError):
    """A topic that is not part of the Storegate layout."""


_SEGMENT_RE = re.compile(rf"^{_SEGMENT}$")


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed Storegate topic."""

    store_id: str
    gateway_id: str
    channel: Channel

    def __str__(self) -> str:
        return f"{TOPIC_ROOT}/{self.store_id}/{self.gateway_id}/{self.channel.value}"


def topic(store_id: str, gateway_id: str, channel: Channel) -> str:
    """Build the topic of one gateway's channel; rejects ids that are not valid segments."""
    for name, value in (("store_id", store_id), ("gateway_id", gateway_id)):
        if not _SEGMENT_RE.match(value):
            raise TopicError(f"{name} {value!r} is not a valid topic segment")
    return str(Topic(store_id, gateway_id, channel))


def subscription(channel: Channel, *, store_id: str = "+", gateway_id: str = "+") -> str:
    """A subscription filter for one channel, all stores and gateways by default."""
    return f"{TOPIC_ROOT}/{store_id}/{gateway_id}/{channel.value}"


def parse_topic(value: str) -> Topic:
    """Parse a concrete topic (no wildcards) into its parts, or raise TopicError."""
    parts = value.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise TopicError(f"topic {value!r} is not under {TOPIC_ROOT}/<store>/<gateway>/<channel>")
    _, _, store_id, gateway_id, channel = parts
    if not _SEGMENT_RE.match(store_id) or not _SEGMENT_RE.match(gateway_id):
        raise TopicError(f"topic {value!r} has an invalid store or gateway segment")
    try:
        return Topic(store_id, gateway_id, Channel(channel))
    except ValueError:
        raise TopicError(f"topic {value!r} has unknown channel {channel!r}") from None


# --------------------------------------------------------------------------- event kinds


class EventKind(StrEnum):
    """Every event kind the project produces or reads, spelled once (the wire carries the value).

    An event's ``kind`` is any dotted name (:data:`EventKindName`), so an older hub still stores
    the events of a newer agent; these are the ones whose meaning the project knows.
    """

    ENVIRONMENT_READING = "environment.reading"
    ENVIRONMENT_ALARM = "environment.alarm"
    OUTBOX_LOSS = "outbox.loss"
    DEVICE_ATTACHED = "device.attached"
    DEVICE_DETACHED = "device.detached"
    DEVICE_UNKNOWN = "device.unknown"
    DEVICE_ERROR = "device.error"
    DEVICE_STALE = "device.stale"
    SHELF_PICK = "shelf.pick"
    SHELF_PUT = "shelf.put"
    SHELF_STOCK = "shelf.stock"
    SHELF_FAULT = "shelf.fault"
    SCAN_SALE = "scan.sale"
    SCAN_RECEIVING = "scan.receiving"
    SCAN_COUNT = "scan.count"
    DOOR_OPENED = "door.opened"
    DOOR_CLOSED = "door.closed"
    CAMERA_MOTION = "camera.motion"
    CAMERA_SNAPSHOT = "camera.snapshot"
    CAMERA_TAMPER = "camera.tamper"
    CAMERA_RESTORED = "camera.restored"
    CAMERA_FOOTFALL = "camera.footfall"
    PRINTER_STATUS = "printer.status"
    MOTION_DETECTED = "motion.detected"


# --------------------------------------------------------------------------- priorities


class Priority(IntEnum):
    """Which events go first after an outage, and which are evicted last (lower = more important)."""

    SECURITY = 0
    SALES = 1
    DEVICE = 2
    TELEMETRY = 3


_PRIORITY_BY_FAMILY: Final[dict[str, Priority]] = {
    "security": Priority.SECURITY,
    "camera": Priority.SECURITY,
    "door": Priority.SECURITY,
    "sale": Priority.SALES,
    "scan": Priority.SALES,
    "shelf": Priority.SALES,
    "inventory": Priority.SALES,
    "receiving": Priority.SALES,
    "printer": Priority.SALES,
    "device": Priority.DEVICE,
    "gateway": Priority.DEVICE,
    "outbox": Priority.DEVICE,
    "environment": Priority.TELEMETRY,
}


# Kinds whose priority differs from their family's: a local cold-chain alarm is food safety, not
# telemetry, and must outlive the readings around it when the outbox is full.
_PRIORITY_BY_KIND: Final[dict[str, Priority]] = {
    EventKind.ENVIRONMENT_ALARM: Priority.SALES,
}


def priority_of(kind: str) -> Priority:
    """The priority of an event kind: its own where listed, else its family's (unknown: device status)."""
    own = _PRIORITY_BY_KIND.get(kind)
    if own is not None:
        return own
    return _PRIORITY_BY_FAMILY.get(kind.split(".", 1)[0], Priority.DEVICE)


# --------------------------------------------------------------------------- event payloads


class Quantity(StrEnum):
    """What an environment sensor measures."""

    TEMPERATURE = "temperature"
    HUMIDITY = "humidity"
    CO2 = "co2"
    LIGHT = "light"


# UCUM-style unit codes, so a reading is unambiguous without a lookup.
UNIT_OF: Final[dict[Quantity, str]] = {
    Quantity.TEMPERATURE: "Cel",
    Quantity.HUMIDITY: "%RH",
    Quantity.CO2: "ppm",
    Quantity.LIGHT: "lx",
}


class EnvironmentReading(WireModel):
    """Payload of ``environment.reading``: one measured value of one quantity."""

    quantity: Quantity
    value: float = Field(allow_inf_nan=False)
    unit: str = Field(min_length=1, max_length=16)
    zone: str | None = Field(default=None, max_length=64, description="e.g. 'chiller-1', 'back-room'")

    @model_validator(mode="after")
    def _unit_matches_quantity(self) -> EnvironmentReading:
        expected = UNIT_OF[self.quantity]
        if self.unit != expected:
            raise ValueError(f"unit {self.unit!r} does not match {self.quantity.value} (expected {expected!r})")
        return self


class SeqRange(WireModel):
    """An inclusive range of sequence numbers of one stream."""

    first: Seq
    last: Seq

    @model_validator(mode="after")
    def _ordered(self) -> SeqRange:
        if self.last < self.first:
            raise ValueError(f"range {self.first}..{self.last} ends before it starts")
        return self

    @property
    def size(self) -> int:
        """How many sequence numbers the range holds."""
        return self.last - self.first + 1


MAX_LOSS_RANGES: Final = 1000


class DataLoss(WireModel):
    """Payload of ``outbox.loss``: events of this stream the hub will never receive.

    ``evicted``: the outbox quota was full and these (lowest priority, oldest) were dropped.
    ``not_held``: the hub asked for them again, but the gateway no longer has them (it had
    deleted them on an earlier acknowledgement, e.g. before the hub was restored from a backup).
    ``corrupt``: the stored copy could not be read back.
    """

    ranges: list[SeqRange] = Field(min_length=1, max_length=MAX_LOSS_RANGES)
    count: int = Field(ge=1, le=INT64_MAX)
    reason: Literal["evicted", "not_held", "corrupt"]
    detail: str = Field(default="", max_length=500)
    by_kind: dict[str, Total] = Field(default_factory=dict, description="lost events per kind, where known")

    @model_validator(mode="after")
    def _count_matches_ranges(self) -> DataLoss:
        total = sum(r.size for r in self.ranges)
        if total != self.count:
            raise ValueError(f"count {self.count} does not match the {total} sequence numbers of the ranges")
        return self


class EnvironmentAlarm(WireModel):
    """Payload of ``environment.alarm``: a local threshold alarm raised or cleared by the gateway itself.

    Raised after the value has been beyond ``limit`` for the rule's delay; cleared once it is back
    inside by the rule's hysteresis. The gateway decides this without the hub, so it works offline.
    """

    state: Literal["raised", "cleared"]
    quantity: Quantity
    direction: Literal["high", "low"]
    limit: float = Field(allow_inf_nan=False)
    value: float = Field(allow_inf_nan=False, description="the reading that raised or cleared it")
    unit: str = Field(min_length=1, max_length=16)
    zone: str | None = Field(default=None, max_length=64)
    since: UtcDatetime = Field(description="when the value first crossed the limit (raised) or came back (cleared)")


class DeviceIdentity(WireModel):
    """How a plugged-in device identified itself: what a technician needs to assign it a profile."""

    vendor_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{4}$", description="USB vendor id, hex")
    product_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{4}$", description="USB product id, hex")
    serial_number: str | None = Field(default=None, max_length=128)
    manufacturer: str | None = Field(default=None, max_length=128)
    product: str | None = Field(default=None, max_length=128)
    location: str | None = Field(default=None, max_length=128, description="physical port path, e.g. '1-1.2:1.0'")


class DeviceAttached(WireModel):
    """Payload of ``device.attached``: a device appeared and its driver started."""

    profile: str = Field(min_length=1, max_length=64)
    address: str = Field(min_length=1, max_length=256, description="port path or bus address it was found at")
    identity: DeviceIdentity | None = None


class DeviceDetached(WireModel):
    """Payload of ``device.detached``: a device went away (unplugged, or removed from the config)."""

    reason: Literal["unplugged", "unconfigured", "shutdown"]
    address: str = Field(min_length=1, max_length=256)


class DeviceUnknown(WireModel):
    """Payload of ``device.unknown``: a device no profile matches; a technician assigns one."""

    address: str = Field(min_length=1, max_length=256)
    identity: DeviceIdentity


class DeviceError(WireModel):
    """Payload of ``device.error``: a driver failed; the gateway retries after ``retry_in_s``."""

    error: str = Field(min_length=1, max_length=500)
    retry_in_s: float | None = Field(default=None, ge=0)
    failures: int = Field(ge=1, le=INT64_MAX, description="consecutive failures, this one included")


class DeviceStale(WireModel):
    """Payload of ``device.stale``: a sensor went silent, or keeps repeating one value with fresh timestamps."""

    reason: Literal["silent", "stuck", "recovered"]
    quantity: Quantity | None = None
    since: UtcDatetime = Field(description="last reading (silent), first repeat (stuck), or recovery")
    value: float | None = Field(default=None, allow_inf_nan=False, description="the repeated value (stuck)")
    zone: str | None = Field(default=None, max_length=64)


class ShelfChange(WireModel):
    """Payload of ``shelf.pick`` and ``shelf.put``: a settled change of one slot's item count."""

    slot: int = Field(ge=1, le=255)
    sku: SkuId | None = None
    delta: ItemDelta = Field(description="items added (put, > 0) or removed (pick, < 0)")
    count: ItemCount = Field(description="items on the slot after the change")
    weight_g: float = Field(allow_inf_nan=False, description="settled net weight after the change")


class ShelfStock(WireModel):
    """Payload of ``shelf.stock``: the periodic stock level of one slot (no count without a unit weight)."""

    slot: int = Field(ge=1, le=255)
    sku: SkuId | None = None
    count: ItemCount | None = None
    weight_g: float = Field(allow_inf_nan=False)


class ShelfFault(WireModel):
    """Payload of ``shelf.fault``: a load cell that cannot be trusted, or ``cleared`` once it is again."""

    slot: int = Field(ge=1, le=255)
    fault: Literal["stuck", "out_of_range", "negative_drift", "disconnected", "cleared"]
    detail: str = Field(default="", max_length=500)


ScanMode = Literal["checkout", "receiving", "stock_count"]


class Scan(WireModel):
    """Payload of ``scan.sale``, ``scan.receiving`` and ``scan.count``: one validated barcode read.

    ``code`` is the data as read (GS1 separators as ``\x1d``); the other fields are what it says.
    In-store variable-measure codes (prefix 02, 20-29) carry ``price`` or ``weight_g``.
    ``symbology_guessed``: the scanner sent no AIM id and the data fits more than one symbology it
    is programmed for. ``gs1_incomplete``: the GS1 data broke GS1 syntax at ``gs1_problem``; ``ai``
    holds only what was read before the break (kept because the gateway's ``gs1_strict`` is off).
    """

    code: str = Field(min_length=1, max_length=512)
    symbology: Literal["ean13", "ean8", "upca", "upce", "code128", "gs1_128", "gs1_datamatrix", "gs1_databar"]
    symbology_guessed: bool = False
    mode: ScanMode
    gtin: str | None = Field(default=None, pattern=r"^[0-9]{14}$", description="as GTIN-14")
    quantity: int = Field(default=1, ge=1, le=INT32_MAX)
    batch: str | None = Field(default=None, max_length=20)
    expiry: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    serial: str | None = Field(default=None, max_length=20)
    net_weight_g: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    price: str | None = Field(default=None, pattern=r"^\d+(\.\d+)?$", description="decimal, store currency")
    ai: dict[str, str] = Field(default_factory=dict, description="GS1 application identifiers and values")
    gs1_incomplete: bool = False
    gs1_problem: str | None = Field(default=None, max_length=500, description="where the GS1 data broke, in words")


class DoorChange(WireModel):
    """Payload of ``door.opened`` and ``door.closed``: a debounced contact change."""

    zone: str | None = Field(default=None, max_length=64)
    open: bool


# What a camera event may name as its snapshot: the gateway's reference (a content hash), or a path-like
# reference of an older producer. The hub serves a snapshot by it; it is never a URL the hub would fetch.
SnapshotRef = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]


class CameraBox(WireModel):
    """A rectangle of a camera frame, in the full frame's pixels (origin top left)."""

    x: int = Field(ge=0, le=16384)
    y: int = Field(ge=0, le=16384)
    w: int = Field(ge=1, le=16384)
    h: int = Field(ge=1, le=16384)


class CameraMotion(WireModel):
    """Payload of ``camera.motion``: something moved in an armed zone of the camera's view."""

    zone: str | None = Field(default=None, max_length=64, description="the configured zone it moved in")
    boxes: list[CameraBox] = Field(default_factory=list, max_length=32, description="where, largest first")
    area_ratio: float | None = Field(
        default=None, ge=0, le=1, allow_inf_nan=False, description="moving share of the zone"
    )
    snapshot_ref: SnapshotRef | None = None


TamperReason = Literal["covered", "defocused", "turned_away"]


class CameraTamper(WireModel):
    """Payload of ``camera.tamper``: the lens is covered or blacked out, blurred or sprayed, or the view moved."""

    reason: TamperReason | None = Field(default=None, description="None: a camera that does not say why")
    score: float | None = Field(default=None, allow_inf_nan=False, description="the measure that crossed its limit")
    snapshot_ref: SnapshotRef | None = None


class CameraRestored(WireModel):
    """Payload of ``camera.restored``: the view is back to its reference scene after a tamper."""

    reason: TamperReason | None = Field(default=None, description="the tamper that ended")
    tampered_s: float | None = Field(default=None, ge=0, allow_inf_nan=False, description="how long it lasted")
    snapshot_ref: SnapshotRef | None = None


class CameraSnapshot(WireModel):
    """Payload of ``camera.snapshot``: a still the gateway took and keeps until the hub has it."""

    snapshot_ref: SnapshotRef
    reason: Literal["motion", "tamper", "shelf_pick", "requested"] | None = None
    shelf_id: str | None = Field(default=None, max_length=64, description="the shelf whose pick it shows")
    slot: int | None = Field(default=None, ge=1, le=255)
    faces_blurred: bool | None = Field(default=None, description="whether faces were blurred on the gateway")
    width: int | None = Field(default=None, ge=1, le=16384)
    height: int | None = Field(default=None, ge=1, le=16384)


class CameraFootfall(WireModel):
    """Payload of ``camera.footfall``: people who crossed a counting line in one period (a minute by default)."""

    line: str = Field(min_length=1, max_length=64, description="the configured line, e.g. 'entrance'")
    period_start: UtcDatetime
    period_s: int = Field(default=60, ge=1, le=3600)
    entered: int = Field(ge=0, le=INT32_MAX)
    exited: int = Field(ge=0, le=INT32_MAX)


class PrinterStatus(WireModel):
    """Payload of ``printer.status``: a receipt printer's real-time status (ESC/POS DLE EOT), sent on change."""

    online: bool
    paper: Literal["ok", "low", "out", "unknown"] = "unknown"
    cover_open: bool | None = None
    error: str | None = Field(default=None, max_length=200, description="the printer's own error, in words")


# Payload schema per event kind. A kind not listed here is carried with a free-form
# payload, so an older hub still stores events of a newer agent.
PAYLOAD_MODELS: Final[dict[str, type[WireModel]]] = {
    EventKind.ENVIRONMENT_READING: EnvironmentReading,
    EventKind.ENVIRONMENT_ALARM: EnvironmentAlarm,
    EventKind.OUTBOX_LOSS: DataLoss,
    EventKind.DEVICE_ATTACHED: DeviceAttached,
    EventKind.DEVICE_DETACHED: DeviceDetached,
    EventKind.DEVICE_UNKNOWN: DeviceUnknown,
    EventKind.DEVICE_ERROR: DeviceError,
    EventKind.DEVICE_STALE: DeviceStale,
    EventKind.SHELF_PICK: ShelfChange,
    EventKind.SHELF_PUT: ShelfChange,
    EventKind.SHELF_STOCK: ShelfStock,
    EventKind.SHELF_FAULT: ShelfFault,
    EventKind.SCAN_SALE: Scan,
    EventKind.SCAN_RECEIVING: Scan,
    EventKind.SCAN_COUNT: Scan,
    EventKind.DOOR_OPENED: DoorChange,
    EventKind.DOOR_CLOSED: DoorChange,
    EventKind.CAMERA_MOTION: CameraMotion,
    EventKind.CAMERA_TAMPER: CameraTamper,
    EventKind.CAMERA_RESTORED: CameraRestored,
    EventKind.CAMERA_SNAPSHOT: CameraSnapshot,
    EventKind.CAMERA_FOOTFALL: CameraFootfall,
    EventKind.PRINTER_STATUS: PrinterStatus,
}


# --------------------------------------------------------------------------- messages


def _require_finite(value: JsonValue) -> None:
    """Raise ValueError if a free-form payload holds a number too large for a float (``1e999`` parses as inf).

    A payload model refuses it itself (``allow_inf_nan=False``); a free-form one would be stored as ``Infinity``,
    which PostgreSQL's json type refuses, failing the unit it was in.
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"the payload holds a number out of range ({value})")
    elif isinstance(value, dict):
        for item in value.values():
            _require_finite(item)
    elif isinstance(value, list):
        for item in value:
            _require_finite(item)


def check_payload(kind: str, payload: dict[str, JsonValue]) -> None:
    """Raise ValidationError (or ValueError) unless ``payload`` is valid for ``kind``: its kind's model, or finite
    numbers. What :class:`Event` checks of its payload, for a decoder that checks it without building the event.
    """
    model = PAYLOAD_MODELS.get(kind)
    if model is not None:
        # The model's own validator, as model_validate calls it: once per event decoded, so without the wrapper.
        model.__pydantic_validator__.validate_python(payload)
    else:
        _require_finite(payload)


class Event(WireModel):
    """One thing a device reported, as the gateway recorded it.

    ``(gateway_id, stream, seq)`` is contiguous per gateway: ``stream`` names one
    life of the gateway's outbox (it changes only if the outbox is wiped), ``seq``
    counts from 1 within it. ``event_id`` is globally unique and makes storage idempotent.
    """

    v: Literal[1] = PROTOCOL_VERSION
    event_id: UUID
    store_id: StoreId
    gateway_id: GatewayId
    stream: UUID
    seq: Seq = Field(description="per-gateway, per-stream sequence number, from 1 without gaps")
    device_id: DeviceId
    kind: EventKindName
    ts: UtcDatetime = Field(description="when the device reported it, UTC")
    payload: dict[str, JsonValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _payload_matches_kind(self) -> Event:
        check_payload(self.kind, self.payload)
        return self

    def typed_payload(self) -> WireModel | None:
        """The payload as its kind's model, or None for a kind without a schema."""
        model = PAYLOAD_MODELS.get(self.kind)
        return None if model is None else model.model_validate(self.payload)


class EventBatch(WireModel):
    """Events of one gateway published together on its ``events`` topic, in sequence order."""

    v: Literal[1] = PROTOCOL_VERSION
    store_id: StoreId
    gateway_id: GatewayId
    sent_at: UtcDatetime
    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)

    @model_validator(mode="after")
    def _events_belong_to_sender(self) -> EventBatch:
        for event in self.events:
            if event.store_id != self.store_id or event.gateway_id != self.gateway_id:
                raise ValueError(
                    f"event {event.event_id} belongs to {event.store_id}/{event.gateway_id}, "
                    f"not to the batch's {self.store_id}/{self.gateway_id}"
                )
        return self


class BatchEnvelope(WireModel):
    """An EventBatch with its events left unread, for a receiver that takes apart a batch one of whose events is
    invalid: it validates each event on its own (:class:`Event`), keeps the valid ones and sets the others aside,
    so one bad event does not cost the batch (and stall the gateway's stream). The envelope's own rules are the
    batch's."""

    # The events are read as they came, NaN included: each is judged on its own (Event refuses a NaN), so the
    # envelope must not refuse the whole batch for one event's NaN.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=True)

    v: Literal[1] = PROTOCOL_VERSION
    store_id: StoreId
    gateway_id: GatewayId
    sent_at: UtcDatetime
    events: list[JsonValue] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class Ack(WireModel):
    """The hub's word that it has durably stored a gateway's events.

    ``through_seq`` is the highest sequence number of ``stream`` up to which the hub
    holds every event (or a recorded loss). The gateway may delete those from its outbox.
    ``gaps`` lists what is missing between ``through_seq`` and the highest sequence number
    the hub holds: the gateway resends those it has already published (they were lost on the
    way), or reports them as ``outbox.loss`` with reason ``not_held`` when it no longer has them.
    """

    v: Literal[1] = PROTOCOL_VERSION
    store_id: StoreId
    gateway_id: GatewayId
    stream: UUID
    through_seq: SeqMark
    stored: Total = Field(description="events of the acknowledged batch stored now")
    duplicates: Total = Field(description="events of the acknowledged batch the hub already had")
    ts: UtcDatetime
    gaps: list[SeqRange] = Field(
        default_factory=list,
        max_length=100,
        description="sequence numbers above through_seq the hub is missing although it holds later ones",
    )


# birth: on every connect; devices: while connected, the devices running changed (plugged in or pulled out);
# shutdown: before a clean disconnect; lost: the last will, published by the broker.
StatusReason = Literal["birth", "devices", "shutdown", "lost"]


class GatewayStatus(WireModel):
    """Retained presence of a gateway: the birth message on connect, its last will when it vanishes.

    ``devices`` lists the devices running; the agent publishes the status again (reason ``devices``) when
    that list changes while it is connected, so the retained message always says what runs now.
    """

    v: Literal[1] = PROTOCOL_VERSION
    store_id: StoreId
    gateway_id: GatewayId
    online: bool
    reason: StatusReason
    ts: UtcDatetime
    agent_version: str | None = Field(default=None, max_length=64)
    config_hash: str | None = Field(default=None, max_length=128)
    devices: list[DeviceId] = Field(default_factory=list, max_length=256)


class GatewayHealth(WireModel):
    """A gateway's periodic self-report; ``problems`` says in words what is wrong."""

    v: Literal[1] = PROTOCOL_VERSION
    store_id: StoreId
    gateway_id: GatewayId
    ts: UtcDatetime
    outbox_depth: Total
    oldest_unacked_age_s: float | None = Field(default=None, ge=0)
    published_total: Total
    acked_total: Total
    resent_total: Total
    reconnects_total: Total
    evicted_total: Total = 0
    duplicates_dropped_total: Total = Field(default=0, description="device replays the outbox already had")
    outbox_bytes: Total = 0
    publish_rate: float = Field(default=0.0, ge=0, description="events published per second, last minute")
    ack_rate: float = Field(default=0.0, ge=0, description="events acknowledged per second, last minute")
    problems: list[str] = Field(default_factory=list)


class Command(WireModel):
    """An instruction from the hub to a gateway, or to one device behind it."""

    v: Literal[1] = PROTOCOL_VERSION
    command_id: UUID
    store_id: StoreId
    gateway_id: GatewayId
    device_id: DeviceId | None = None
    name: str = Field(pattern=r"^[a-z][a-z0-9_.]{0,63}$", description="e.g. 'print', 'tare', 'ping'")
    args: dict[str, JsonValue] = Field(default_factory=dict)
    issued_at: UtcDatetime
    expires_at: UtcDatetime | None = None


class CommandResult(WireModel):
    """What became of a Command.

    ``accepted`` is not final: the gateway has stored the command (a print job) and will send ``done`` or
    ``failed`` when it ends, which may be hours later. The others are final.
    """

    v: Literal[1] = PROTOCOL_VERSION
    command_id: UUID
    store_id: StoreId
    gateway_id: GatewayId
    status: Literal["accepted", "done", "failed", "rejected", "expired"]
    detail: str = Field(default="", max_length=2000)
    ts: UtcDatetime


# What each channel carries, so a receiver can decode by topic alone.
MESSAGE_OF_CHANNEL: Final[dict[Channel, type[WireModel]]] = {
    Channel.EVENTS: EventBatch,
    Channel.ACK: Ack,
    Channel.STATUS: GatewayStatus,
    Channel.HEALTH: GatewayHealth,
    Channel.COMMANDS: Command,
    Channel.COMMAND_RESULTS: CommandResult,
}


class WireError(ValueError):
    """A payload that is not a valid message; ``reason`` is a short label for counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


M = TypeVar("M", bound=WireModel)


def decode(model: type[M], raw: bytes) -> M:
    """Parse and validate one message, raising WireError with a short reason on any defect."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise WireError("too_large", f"{len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    if b"NaN" in raw or b"Infinity" in raw:
        _refuse_non_finite(model, raw)
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "<message>"
        reason = "malformed_json" if first["type"] in {"json_invalid", "json_type"} else "invalid"
        detail = f"{model.__name__}: {where}: {first['msg']} ({err.error_count()} error(s))"
        raise WireError(reason, detail) from err


def _refuse_non_finite(model: type[WireModel], raw: bytes) -> None:
    """Raise WireError if ``raw`` is JSON but for a NaN or Infinity number (in a string those words are fine).

    They are not JSON (RFC 8259), the agent never writes them, and pydantic's parser takes them: a free-form
    payload carrying one was stored on SQLite and failed its whole unit on PostgreSQL, whose json type
    refuses it. Parsed again only when the bytes hold one of the words, so the usual message costs a scan;
    JSON broken otherwise is left to the usual validation, which says so.
    """
    try:
        pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as strict:
        try:
            pydantic_core.from_json(raw)
        except ValueError:
            return
        raise WireError("invalid", f"{model.__name__}: NaN or Infinity is not a JSON number ({strict})") from strict


def encode(message: WireModel) -> bytes:
    """Serialise a message as compact UTF-8 JSON."""
    return message.model_dump_json().encode()


# --------------------------------------------------------------------------- self-test reports


class SelftestOutcome(StrEnum):
    """One device's result in a self-test (``storegate provision selftest``)."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class SelftestDeviceResult(WireModel):
    """One device in a self-test: its outcome and the reason in words."""

    device_id: DeviceId
    profile: str | None = Field(default=None, max_length=64)
    kind: str | None = Field(default=None, max_length=32)
    outcome: SelftestOutcome
    reason: str = Field(max_length=1000)


class SelftestReport(WireModel):
    """A gateway's self-test: what a technician proved of each device, uploaded to the hub's gateway listener."""

    v: Literal[1] = PROTOCOL_VERSION
    store_id: StoreId
    gateway_id: GatewayId
    started_at: UtcDatetime
    finished_at: UtcDatetime
    results: list[SelftestDeviceResult] = Field(default_factory=list, max_length=256)

    @property
    def passed(self) -> bool:
        """Whether no device failed (skipped ones do not count against it)."""
        return all(result.outcome is not SelftestOutcome.FAILED for result in self.results)
