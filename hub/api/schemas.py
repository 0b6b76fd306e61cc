"""Response models of the hub's HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from storegate import wire


class ApiModel(BaseModel):
    """Base of the response models: unknown fields are an error, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckOut(ApiModel):
    """One health check."""

    ok: bool
    detail: str = Field(description="what was checked, e.g. the broker address")


class HealthOut(ApiModel):
    """The hub's health: ``problems`` says in words what is wrong."""

    status: Literal["ok", "degraded"]
    problems: list[str] = Field(description="one sentence per problem, empty when status is ok")
    checks: dict[str, CheckOut] = Field(description="the individual checks: database, mqtt, consumer")
    version: str = Field(description="the hub's software version")


class HealthStatusOut(ApiModel):
    """The hub's health as anyone may see it: the status only (sign in or send a token for the checks)."""

    status: Literal["ok", "degraded"]


class StoreOut(ApiModel):
    """A store and what the hub knows of it."""

    store_id: str
    first_seen: datetime = Field(description="when the hub first heard of the store, UTC")
    gateway_count: int
    online_gateway_count: int = Field(description="gateways that are online and were heard from within the grace")
    event_count: int
    last_event_at: datetime | None = Field(description="when the hub last stored a new event of the store, UTC")
    events_lost: int = Field(description="events its gateways reported lost (see /api/v1/data-losses)")


class StoreList(ApiModel):
    """Every store, by id."""

    items: list[StoreOut]


class GatewayOut(ApiModel):
    """A gateway: presence, software, devices, how far its events are stored, and its last health report."""

    gateway_id: str
    store_id: str
    online: bool = Field(description="its status says online and it was heard from within gateway_offline_grace_s")
    connectivity: Literal["online", "silent", "offline", "unknown"] = Field(
        description="online; silent (status online, nothing heard within the grace); offline; unknown (no status yet)"
    )
    last_status_reason: wire.StatusReason | None
    status_changed_at: datetime | None
    last_seen_at: datetime = Field(description="when the hub last heard from the gateway, UTC")
    agent_version: str | None
    config_hash: str | None
    devices: list[str] = Field(description="device ids running, from the gateway's last status (birth or devices)")
    stream: UUID | None = Field(description="the gateway's current outbox stream")
    through_seq: int | None = Field(description="every event of the stream up to this seq is stored or recorded lost")
    events_lost: int = Field(description="events the gateway reported lost, over all its streams")
    last_health: dict[str, JsonValue] | None = Field(description="the gateway's last GatewayHealth report")
    last_health_at: datetime | None


class GatewayList(ApiModel):
    """Gateways, by store and id."""

    items: list[GatewayOut]


class EventOut(ApiModel):
    """One stored event: every field of the wire Event, plus when the hub received it."""

    event_id: UUID
    store_id: str
    gateway_id: str
    stream: UUID
    seq: int
    device_id: str
    kind: str
    ts: datetime = Field(description="when the device reported it, UTC")
    payload: dict[str, JsonValue]
    received_at: datetime = Field(description="when the hub received it, UTC")


class EventPageOut(ApiModel):
    """A page of events, newest first."""

    items: list[EventOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class DataLossOut(ApiModel):
    """A range of a gateway's events the hub will never receive, as reported by an ``outbox.loss`` event."""

    id: int = Field(description="the record's id; records of one loss event share event_id")
    store_id: str
    gateway_id: str
    stream: UUID
    first_seq: int
    last_seq: int
    count: int = Field(description="events in the range: last_seq - first_seq + 1")
    reason: Literal["evicted", "not_held", "corrupt"] = Field(
        description="evicted: the gateway's outbox was full; not_held: asked for again, the gateway no longer "
        "had them; corrupt: the gateway could not read them back"
    )
    detail: str
    by_kind: dict[str, int] = Field(description="lost events per kind of the whole loss event, where known")
    event_id: UUID = Field(description="the outbox.loss event that reported it")
    reported_at: datetime = Field(description="when the gateway recorded the loss (its clock), UTC")
    recorded_at: datetime = Field(description="when the hub stored it, UTC")


class DataLossPageOut(ApiModel):
    """A page of loss records, newest report first."""

    items: list[DataLossOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")
