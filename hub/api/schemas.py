"""Response models of the hub's HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from hub.ingest.clock import ClockIssue
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
    """A gateway of one store: its enrolment, presence, software, devices, how far its events are stored, and its
    last health report. A gateway is (store_id, gateway_id): the same id in two stores is two gateways."""

    store_id: str
    gateway_id: str
    enrolled_at: datetime = Field(description="when it was enrolled (the hub accepts it from then on), UTC")
    enrolled_by: str = Field(description="who enrolled it")
    enrolment: Literal["operator", "token", "first_contact", "migrated"] = Field(
        description="operator: added by a person; token: it enrolled itself with a person's one-time token; "
        "first_contact: accepted on its first message while accept_unknown_gateways was on; migrated: it sent "
        "before enrolment existed"
    )
    revoked_at: datetime | None = Field(description="when it was revoked (nothing of it is accepted since), UTC")
    revoked_by: str | None
    certificate_expires_at: datetime | None = Field(
        default=None,
        description="when the newest certificate the hub signed for it ends, UTC (the agent renews it before); "
        "null when the hub runs no CA or signed none since it records this",
    )
    first_seen: datetime | None = Field(description="when the hub first heard from it; null until then")
    online: bool = Field(description="its status says online and it was heard from within gateway_offline_grace_s")
    connectivity: Literal["online", "silent", "offline", "unknown"] = Field(
        description="online; silent (status online, nothing heard within the grace); offline; unknown (no status yet)"
    )
    last_status_reason: wire.StatusReason | None
    status_changed_at: datetime | None
    last_seen_at: datetime | None = Field(description="when the hub last heard from the gateway, UTC; null: never")
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
    ts: datetime = Field(description="when the device reported it, UTC, by the gateway's clock (see clock_issue)")
    payload: dict[str, JsonValue]
    received_at: datetime = Field(description="when the hub received it, UTC, by the hub's clock")
    clock_issue: ClockIssue | None = Field(
        default=None,
        description="why ts is not believed (the gateway's clock was off), or null: before_earliest (before 2020, "
        "a clock never set), ahead_of_hub (later than its receipt), older_than_outbox (older than an outbox "
        "waits), gateway_clock_ahead (its batch was sent ahead of the hub's clock)",
    )


class EventPageOut(ApiModel):
    """A page of events, newest first (by the time asked for: received by default)."""

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


class GatewayEnrolIn(ApiModel):
    """A gateway to enrol in the store of the path; who enrols it is the request's principal."""

    gateway_id: wire.GatewayId


class GatewayCredentialsOut(ApiModel):
    """A newly enrolled gateway's client certificate and key, shown once: the hub keeps no copy of the key."""

    certificate_pem: str = Field(description="the gateway's client certificate (gateway.crt)")
    private_key_pem: str = Field(description="its private key (gateway.key): store it 0600 on the gateway only")
    ca_certificate_pem: str = Field(description="the CA that signed it and the broker's certificate (ca.crt)")
    serial: str = Field(description="the certificate's serial number, hex")
    not_after: datetime = Field(description="when the certificate expires")


class GatewayEnrolledOut(GatewayOut):
    """The gateway just enrolled, and its credentials when the hub runs the gateways' CA."""

    credentials: GatewayCredentialsOut | None = Field(
        description="null when the hub runs no CA (storegate hub pki init): the broker's clients are certified "
        "elsewhere"
    )


class RefusedEventOut(ApiModel):
    """An event of an enrolled gateway's batch that the hub set aside instead of storing; the rest was stored."""

    id: int
    store_id: str
    gateway_id: str
    stream: UUID | None = Field(description="its stream, where it could be read")
    seq: int | None = Field(
        description="its seq, where it could be read: the stream's Ack moved past it, so the gateway deleted it"
    )
    event_id: str | None = Field(description="its event_id, where it was a UUID")
    kind: str | None
    reason: Literal["invalid_event", "not_of_sender", "storage_error"] = Field(
        description="invalid_event: it fails the wire contract; not_of_sender: it names another store or gateway "
        "than the batch; storage_error: the database refused it"
    )
    detail: str = Field(description="why, in words")
    event_json: str = Field(description="the event as it arrived (its first 16 KB)")
    received_at: datetime
    recorded_at: datetime


class RefusedEventPageOut(ApiModel):
    """A page of refused events, most recently recorded first."""

    items: list[RefusedEventOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


# --------------------------------------------------------------------------- errors
# Every error the API answers has one of these two shapes, declared once and put on every operation of the
# OpenAPI document (hub.app), so a client (and schemathesis) can rely on them.


class Problem(ApiModel):
    """A refusal or failure in words: 400 (Host not allowed), 404, 409, 413 (body too large), 503."""

    detail: str = Field(description="what was wrong, in a sentence; nothing was changed")


class ValidationIssue(ApiModel):
    """One bad value of a request, in pydantic's terms."""

    type: str = Field(description="pydantic's error type, e.g. 'less_than_equal'")
    loc: list[str | int] = Field(description="where: 'body', 'query', 'path' or 'header', then the field")
    msg: str
    input: JsonValue = Field(
        default=None,
        description="the refused value: long strings cut short, large values left out (absent then)",
    )
    ctx: dict[str, JsonValue] | None = Field(default=None, description="the limit broken, e.g. {'le': 2147483647}")


class ValidationProblem(ApiModel):
    """422: the request's values are not acceptable; each issue names its field."""

    detail: list[ValidationIssue] = Field(description="the issues, at most 100")
    message: str = Field(description="the issues in one line, 'field: problem; ...'")
