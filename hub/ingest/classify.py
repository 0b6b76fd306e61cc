"""What arrives from the gateways, decoded: one MQTT message in, a decoded message or a rejection out.

:func:`classify` is pure: it parses the topic, decodes the payload by channel and checks that sender and
topic agree. A message it refuses becomes a :class:`~hub.ingest.rejections.Rejection`, which the unit
of work records in ``rejected_messages``; the consumer then goes on with the next message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from hub.ingest.rejections import Rejection
from storegate import wire
from storegate.mqtt import Incoming

# The channels the hub subscribes to; anything else arriving is misrouted.
CONSUMED_CHANNELS: Final = (
    wire.Channel.EVENTS,
    wire.Channel.STATUS,
    wire.Channel.HEALTH,
    wire.Channel.COMMAND_RESULTS,
)


@dataclass(frozen=True, slots=True)
class BatchMessage:
    """A valid EventBatch from the gateway named in its topic."""

    batch: wire.EventBatch
    received_at: datetime


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
    try:
        message = wire.decode(wire.MESSAGE_OF_CHANNEL[topic.channel], incoming.payload)
    except wire.WireError as err:
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
    return len(item.batch.events) if isinstance(item, BatchMessage) else 1
