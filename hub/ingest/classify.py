"""What arrives from the gateways, decoded: one MQTT message in, a decoded message or a rejection out.

:func:`classify` is pure: it parses the topic, decodes the payload by channel and checks that sender and
topic agree. A message it refuses becomes a :class:`~hub.ingest.rejections.Rejection`, which the unit
of work records in ``rejected_messages``; the consumer then goes on with the next message.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

import pydantic_core
from pydantic import ValidationError

from hub.ingest.batch_decoder import decode_valid_batch
from hub.ingest.rejections import MAX_SEQ, Rejection, SetAside
from storegate import wire
from storegate.mqtt import Incoming

# The channels the hub subscribes to; anything else arriving is misrouted.
CONSUMED_CHANNELS: Final = (
    wire.Channel.EVENTS,
    wire.Channel.STATUS,
    wire.Channel.HEALTH,
    wire.Channel.COMMAND_RESULTS,
)


# Why an event of a batch was set aside, as counted in storegate_hub_refused_events_total{reason}.
INVALID_EVENT: Final = "invalid_event"
NOT_OF_SENDER: Final = "not_of_sender"


@dataclass(frozen=True, slots=True)
class BatchMessage:
    """An EventBatch from the gateway named in its topic: its valid events, and those set aside.

    ``batch.events`` are valid; ``set_aside`` are the events of the batch that were not (stored in
    refused_events, their positions accounted for), and ``batch`` may then hold no event at all.
    """

    batch: wire.EventBatch
    received_at: datetime
    set_aside: tuple[SetAside, ...] = ()


@dataclass(frozen=True, slots=True)
class StatusMessage:
    """A valid GatewayStatus (birth or last will)."""

    status: wire.GatewayStatus
    retained: bool
    received_at: datetime


@dataclass(frozen=True, slots=True)
class HealthMessage:
    """A valid GatewayHealth report."""

    health: wire.GatewayHealth
    retained: bool
    received_at: datetime


@dataclass(frozen=True, slots=True)
class ResultMessage:
    """A gateway's result of a command the hub sent it."""

    result: wire.CommandResult
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Cleared:
    """An empty payload on a retained channel: someone deleted the retained message, nothing to store."""

    topic: str


Classified = BatchMessage | StatusMessage | HealthMessage | ResultMessage | Rejection | Cleared


def classify(incoming: Incoming, *, received_at: datetime) -> Classified:
    """Parse the topic, decode the payload by channel and check that sender and topic agree."""

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(incoming.topic, reason, detail, incoming.payload, received_at)

    try:
        topic = wire.parse_topic(incoming.topic)
    except wire.TopicError as err:
        return reject("bad_topic", str(err))
    if topic.channel not in CONSUMED_CHANNELS:
        return reject("unexpected_channel", f"the hub does not consume {topic.channel.value} messages")
    if not incoming.payload and topic.channel in (wire.Channel.STATUS, wire.Channel.HEALTH):
        return Cleared(incoming.topic)
    # A valid batch in one pass (batch_decoder); any other message, or a batch it leaves, by the wire contract.
    fast = decode_valid_batch(incoming.payload) if topic.channel is wire.Channel.EVENTS else None
    try:
        message = fast if fast is not None else wire.decode(wire.MESSAGE_OF_CHANNEL[topic.channel], incoming.payload)
    except wire.WireError as err:
        if topic.channel is wire.Channel.EVENTS and err.reason == "invalid":
            taken_apart = _event_by_event(incoming.payload, topic, received_at)
            if taken_apart is not None:
                return taken_apart
        return reject(err.reason, err.detail)
    match message:
        case wire.EventBatch() | wire.GatewayStatus() | wire.GatewayHealth() | wire.CommandResult():
            sender = (message.store_id, message.gateway_id)
        case _:  # MESSAGE_OF_CHANNEL maps the consumed channels to exactly these three
            return reject("unexpected_channel", f"{type(message).__name__} is not consumed by the hub")
    if sender != (topic.store_id, topic.gateway_id):
        return reject(
            "topic_mismatch",
            f"{type(message).__name__} from {sender[0]}/{sender[1]} published on the topic of "
            f"{topic.store_id}/{topic.gateway_id}",
        )
    match message:
        case wire.EventBatch():
            return BatchMessage(message, received_at)
        case wire.GatewayStatus():
            return StatusMessage(message, incoming.retain, received_at)
        case wire.CommandResult():
            return ResultMessage(message, received_at)
        case _:
            return HealthMessage(message, incoming.retain, received_at)


# The channel each decoded message came on, for the consumer's counts of messages received.
CHANNEL_OF: Final[dict[type, wire.Channel]] = {
    BatchMessage: wire.Channel.EVENTS,
    StatusMessage: wire.Channel.STATUS,
    HealthMessage: wire.Channel.HEALTH,
    ResultMessage: wire.Channel.COMMAND_RESULTS,
}


def weight(item: Classified) -> int:
    """How much an item counts against the events-per-transaction budget."""
    return max(1, len(item.batch.events) + len(item.set_aside)) if isinstance(item, BatchMessage) else 1


# --------------------------------------------------------------------------- a batch taken apart


def _event_by_event(payload: bytes, topic: wire.Topic, received_at: datetime) -> BatchMessage | None:
    """A batch that failed validation as a whole, validated event by event; None if its envelope is bad too.

    Only the rare invalid batch gets here: the valid ones were read in one pass. NaN and Infinity are
    read here (the whole-message check refused them) so that an event carrying one is set aside alone.
    """
    try:
        envelope = wire.BatchEnvelope.model_validate(pydantic_core.from_json(payload))
    except (ValueError, ValidationError):
        return None
    if (envelope.store_id, envelope.gateway_id) != (topic.store_id, topic.gateway_id):
        return None  # classify rejects the whole message as topic_mismatch
    valid: list[wire.Event] = []
    set_aside: list[SetAside] = []
    for raw in envelope.events:
        event, reason, detail = _one_event(raw, envelope)
        if event is not None:
            valid.append(event)
        else:
            set_aside.append(_set_aside(raw, envelope, reason, detail, received_at))
    # Built without validation: each event was validated above and belongs to the sender; the batch may be empty.
    batch = wire.EventBatch.model_construct(
        v=envelope.v, store_id=envelope.store_id, gateway_id=envelope.gateway_id, sent_at=envelope.sent_at, events=valid
    )
    return BatchMessage(batch, received_at, tuple(set_aside))


def _one_event(raw: object, envelope: wire.BatchEnvelope) -> tuple[wire.Event | None, str, str]:
    """The event if valid and the sender's, else why not (reason, detail)."""
    if not _finite(raw):
        return None, INVALID_EVENT, "NaN or Infinity is not a JSON number"
    try:
        event = wire.Event.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "<event>"
        return None, INVALID_EVENT, f"Event: {where}: {first['msg']} ({err.error_count()} error(s))"
    if (event.store_id, event.gateway_id) != (envelope.store_id, envelope.gateway_id):
        return (
            None,
            NOT_OF_SENDER,
            f"event of {event.store_id}/{event.gateway_id} in a batch of {envelope.store_id}/{envelope.gateway_id}",
        )
    return event, "", ""


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    if isinstance(value, list):
        return all(_finite(item) for item in value)
    return True


def _set_aside(raw: object, envelope: wire.BatchEnvelope, reason: str, detail: str, received_at: datetime) -> SetAside:
    """An invalid event with what can be read of its position and identity (None where it cannot)."""
    fields = raw if isinstance(raw, dict) else {}
    stream: UUID | None
    try:
        stream = UUID(str(fields["stream"])) if isinstance(fields.get("stream"), str) else None
    except ValueError:
        stream = None
    seq = fields.get("seq")
    position = seq if isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq <= MAX_SEQ else None
    event_id = fields.get("event_id")
    try:
        event_id = str(UUID(event_id)) if isinstance(event_id, str) else None
    except ValueError:
        event_id = None
    kind = fields.get("kind")
    return SetAside(
        store_id=envelope.store_id,
        gateway_id=envelope.gateway_id,
        stream=stream,
        seq=position if stream is not None else None,
        event_id=event_id,
        kind=kind[:64] if isinstance(kind, str) else None,
        reason=reason,
        detail=detail,
        event_json=json.dumps(raw, allow_nan=True).encode(),
        received_at=received_at,
    )


# --------------------------------------------------------------------------- who sent what


def sender_of(item: Classified) -> tuple[str, str] | None:
    """The (store_id, gateway_id) that sent a decoded message; None for a rejection or a cleared message."""
    message = message_of(item)
    return None if message is None else (message.store_id, message.gateway_id)


def message_of(
    item: Classified,
) -> wire.EventBatch | wire.GatewayStatus | wire.GatewayHealth | wire.CommandResult | None:
    """The wire message of a decoded item; None for a rejection or a cleared message."""
    match item:
        case BatchMessage(batch=message) | StatusMessage(status=message) | HealthMessage(health=message):
            return message
        case ResultMessage(result=result):
            return result
        case _:
            return None
