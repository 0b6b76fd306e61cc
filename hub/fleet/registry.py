"""Enrolling and revoking gateways, and admitting what they send: a gateway is (store_id, gateway_id).

The hub accepts nothing from a gateway that was not enrolled, or that was revoked: the consumer asks
:func:`admit` about the senders of each unit before anything of theirs is written. ``accept_unknown_gateways``
(the demo's setting) enrols a new gateway on its first message instead, recorded as ``first_contact``.

:func:`enrol` and :func:`revoke` are the only ways an operator adds or removes a gateway (the API and the
CLI both call them), so whatever must happen with an enrolment (issuing the gateway's certificate, the
broker's ACL) has one place to go. Each runs in the caller's transaction and never commits.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.bulk import select_by_keys
from hub.db.dialect import dialect_insert
from hub.db.models import ACTOR_LENGTH, Gateway, OutgoingCommand, Store
from hub.errors import HubError
from storegate import wire

GatewayKey = tuple[str, str]  # (store_id, gateway_id)
Enrolment = Literal["operator", "token", "first_contact", "migrated"]

# Who enrolled a gateway that the hub accepted on first contact (accept_unknown_gateways).
FIRST_CONTACT_ACTOR: Final = "first contact (accept_unknown_gateways)"
# The reasons a gateway's message is refused, as counted in storegate_hub_rejected_messages_total{reason}.
UNKNOWN_GATEWAY: Final = "unknown_gateway"
REVOKED_GATEWAY: Final = "revoked_gateway"


class InvalidGatewayError(HubError, ValueError):
    """Store or gateway ids that are not topic segments (lower case letters, digits, '-', '_'), or no actor."""


class GatewayNotFoundError(HubError, LookupError):
    """No gateway of that id in that store."""


class AlreadyEnrolledError(HubError, RuntimeError):
    """The gateway is enrolled already (and not revoked)."""


class AlreadyRevokedError(HubError, RuntimeError):
    """The gateway was revoked already."""


# Every change of the registry that cannot be made; each message says why.
REGISTRY_ERRORS: Final = (InvalidGatewayError, GatewayNotFoundError, AlreadyEnrolledError, AlreadyRevokedError)


def gateway_key(store_id: str, gateway_id: str) -> GatewayKey:
    """``(store_id, gateway_id)`` if both are valid ids of the wire contract; else InvalidGatewayError."""
    try:
        wire.topic(store_id, gateway_id, wire.Channel.EVENTS)
    except wire.TopicError as err:
        raise InvalidGatewayError(str(err)) from None
    return store_id, gateway_id


def parse_gateway(text: str) -> GatewayKey:
    """``STORE/GATEWAY`` (as the CLI takes it) as a key; InvalidGatewayError otherwise."""
    store_id, slash, gateway_id = text.partition("/")
    if not slash:
        raise InvalidGatewayError(f"{text!r} is not STORE/GATEWAY, e.g. store-0042/gw-1")
    return gateway_key(store_id, gateway_id)


def _actor(by: str) -> str:
    by = by.strip()
    if not by:
        raise InvalidGatewayError("say who makes the change (by)")
    return by[:ACTOR_LENGTH]


async def _row(session: AsyncSession, key: GatewayKey) -> Gateway | None:
    return await session.get(Gateway, key, populate_existing=True)


async def _ensure_store(session: AsyncSession, store_id: str, *, now: datetime) -> None:
    insert_into = dialect_insert(session)
    await session.execute(
        insert_into(Store)
        .values(store_id=store_id, first_seen=now, event_count=0)
        .on_conflict_do_nothing(index_elements=[Store.store_id])
    )


async def enrol(
    session: AsyncSession, store_id: str, gateway_id: str, *, by: str, now: datetime, how: Enrolment = "operator"
) -> Gateway:
    """Add a gateway to its store, or enrol a revoked one again; the hub accepts it from now on.

    ``how`` is "token" when the gateway enrolled itself with an operator's one-time token (hub.fleet.enrolment).

    Raises AlreadyEnrolledError if it is enrolled and not revoked, InvalidGatewayError for bad ids.
    """
    key = gateway_key(store_id, gateway_id)
    actor = _actor(by)
    row = await _row(session, key)
    if row is not None and row.revoked_at is None:
        raise AlreadyEnrolledError(
            f"gateway {store_id}/{gateway_id} is enrolled already "
            f"(by {row.enrolled_by} at {row.enrolled_at:%Y-%m-%d %H:%M} UTC)"
        )
    await _ensure_store(session, store_id, now=now)
    if row is None:
        row = Gateway(
            store_id=store_id,
            gateway_id=gateway_id,
            online=None,
            devices=[],
            enrolled_at=now,
            enrolled_by=actor,
            enrolment=how,
        )
        session.add(row)
    else:  # revoked before: enrolled again, its history kept
        row.enrolled_at, row.enrolled_by, row.enrolment = now, actor, how
        row.revoked_at, row.revoked_by = None, None
    await session.flush()
    return row


async def revoke(session: AsyncSession, store_id: str, gateway_id: str, *, by: str, now: datetime) -> Gateway:
    """Revoke a gateway: nothing it sends is accepted from now on; its commands not yet sent are cancelled.

    What it sent before stays. Raises GatewayNotFoundError or AlreadyRevokedError.
    """
    key = gateway_key(store_id, gateway_id)
    actor = _actor(by)
    row = await _row(session, key)
    if row is None:
        raise GatewayNotFoundError(f"store {store_id} has no gateway {gateway_id}")
    if row.revoked_at is not None:
        raise AlreadyRevokedError(
            f"gateway {store_id}/{gateway_id} was revoked already "
            f"(by {row.revoked_by} at {row.revoked_at:%Y-%m-%d %H:%M} UTC)"
        )
    row.revoked_at, row.revoked_by = now, actor
    await session.execute(
        update(OutgoingCommand)
        .where(
            OutgoingCommand.store_id == store_id,
            OutgoingCommand.gateway_id == gateway_id,
            OutgoingCommand.status == "pending",
        )
        .values(status="undeliverable", result_detail=f"gateway revoked by {actor}", result_at=now),
        execution_options={"synchronize_session": False},
    )
    await session.flush()
    return row


async def find(session: AsyncSession, store_id: str, gateway_id: str) -> Gateway:
    """One gateway; GatewayNotFoundError if the store has none of that id."""
    row = await _row(session, gateway_key(store_id, gateway_id))
    if row is None:
        raise GatewayNotFoundError(f"store {store_id} has no gateway {gateway_id}")
    return row


async def list_gateways(session: AsyncSession, *, store_id: str | None = None) -> Sequence[Gateway]:
    """Every gateway (or one store's), enrolled or revoked, by store and id."""
    stmt = select(Gateway).order_by(Gateway.store_id, Gateway.gateway_id)
    if store_id is not None:
        stmt = stmt.where(Gateway.store_id == store_id)
    return (await session.scalars(stmt)).all()


# --------------------------------------------------------------------------- admitting what arrives


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why nothing of a gateway is accepted."""

    reason: str
    detail: str


async def admit(
    session: AsyncSession, gateways: Collection[GatewayKey], *, accept_unknown: bool, now: datetime
) -> dict[GatewayKey, Refusal]:
    """The gateways of ``gateways`` whose messages must be refused, and why; one query for all of them.

    Unknown gateways are enrolled on the spot when ``accept_unknown`` (recorded as ``first_contact``);
    a revoked gateway is refused either way: only an operator enrols it again.
    """
    if not gateways:
        return {}
    dialect = session.get_bind().dialect.name
    key_columns = (Gateway.store_id, Gateway.gateway_id)
    known: dict[GatewayKey, datetime | None] = {}
    for query in select_by_keys(dialect, (*key_columns, Gateway.revoked_at), key_columns, sorted(gateways)):
        known.update(
            {(store_id, gateway_id): revoked for store_id, gateway_id, revoked in await session.execute(query)}
        )
    refused: dict[GatewayKey, Refusal] = {}
    for (store_id, gateway_id), revoked_at in known.items():
        if revoked_at is not None:
            refused[(store_id, gateway_id)] = Refusal(
                REVOKED_GATEWAY, f"gateway {store_id}/{gateway_id} was revoked at {revoked_at.isoformat()}"
            )
    unknown = sorted(set(gateways) - known.keys())
    if unknown and accept_unknown:
        await _enrol_on_first_contact(session, unknown, now=now)
    elif unknown:
        for store_id, gateway_id in unknown:
            refused[(store_id, gateway_id)] = Refusal(
                UNKNOWN_GATEWAY,
                f"gateway {store_id}/{gateway_id} is not enrolled; an operator adds it with "
                f"'storegate hub gateways add {store_id}/{gateway_id}' or POST /api/v1/stores/{store_id}/gateways",
            )
    return refused


async def _enrol_on_first_contact(session: AsyncSession, keys: Sequence[GatewayKey], *, now: datetime) -> None:
    """Enrol gateways the hub just heard from for the first time (accept_unknown_gateways), in two statements."""
    insert_into = dialect_insert(session)
    connection = await session.connection()
    await connection.execute(
        insert_into(Store).on_conflict_do_nothing(index_elements=[Store.store_id]),
        [{"store_id": store_id, "first_seen": now, "event_count": 0} for store_id in sorted({k[0] for k in keys})],
    )
    await connection.execute(
        # Another hub process may enrol the same gateway at the same moment: either row will do.
        insert_into(Gateway).on_conflict_do_nothing(index_elements=[Gateway.store_id, Gateway.gateway_id]),
        [
            {
                "store_id": store_id,
                "gateway_id": gateway_id,
                "online": None,
                "devices": [],
                "enrolled_at": now,
                "enrolled_by": FIRST_CONTACT_ACTOR,
                "enrolment": "first_contact",
            }
            for store_id, gateway_id in keys
        ],
    )
