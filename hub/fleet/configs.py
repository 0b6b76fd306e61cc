"""Agent configs the hub pushes to a gateway: versions, the checks the hub can make, and what became of each.

An operator's push (:mod:`hub.fleet.config_api`) becomes, in one transaction, a ``gateway_configs`` row (the next
version of that gateway) and a pending ``config.apply`` command carrying the text; the command sender publishes
it and the gateway's results move the row on (:func:`hub.commands.status.set_command_status` calls
:func:`config_results`).

What the hub checks (:func:`push_problems`): the size, that it is TOML, that it names this store and gateway,
and no broker password written inline (the hub's copy, its audit and its API would hold it). It cannot check the
rest: the agent's config model lives in ``edge_agent``, which the hub may not import (the contract
"agent-and-hub-apart"), and device profiles, relative paths and secret files' modes are the gateway's own. The
gateway checks the whole file as it checks its config at start, and refuses it with the problems in words
(``rejected``, nothing changed).
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import GatewayConfig, OutgoingCommand

APPLY_COMMAND: Final = "config.apply"  # the agent's edge_agent.remote_config.APPLY_COMMAND
# As the agent's edge_agent.remote_config: a whole agent.toml, 256 devices included, is well under it.
MAX_CONFIG_BYTES: Final = 64 * 1024
DEFAULT_PROBATION_S: Final = 120.0
MIN_PROBATION_S: Final = 1.0
MAX_PROBATION_S: Final = 900.0
# How long a push waits for an offline gateway before it expires unsent.
DEFAULT_EXPIRES_IN_S: Final = 24 * 3600
MAX_EXPIRES_IN_S: Final = 7 * 24 * 3600
HISTORY_KEPT_IN_ANSWER: Final = 50

# A gateway's result status -> the config's status; "failed" whose detail starts "rolled back" is rolled_back.
CONFIG_STATUS_OF: Final[dict[str, str]] = {
    "accepted": "accepted",
    "done": "applied",
    "failed": "failed",
    "rejected": "rejected",
    "expired": "expired",
}
# A config's status moves only forward: from these, and "accepted" only from "pending".
OPEN_STATUSES: Final = ("pending", "accepted")


class ConfigPush(BaseModel):
    """A new agent.toml for one gateway, and how long it has to prove itself there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    toml: str = Field(min_length=1, max_length=MAX_CONFIG_BYTES, description="the whole agent.toml, as text")
    probation_s: float = Field(
        default=DEFAULT_PROBATION_S,
        ge=MIN_PROBATION_S,
        le=MAX_PROBATION_S,
        description="seconds the gateway has to reach the hub and its devices with it, or it rolls back",
    )
    expires_in_s: int = Field(
        default=DEFAULT_EXPIRES_IN_S,
        ge=10,
        le=MAX_EXPIRES_IN_S,
        description="seconds the push may wait for an offline gateway before it expires unsent",
    )


def push_problems(text: str, *, store_id: str, gateway_id: str) -> list[str]:
    """What the hub can tell is wrong with ``text`` as the agent.toml of ``store_id``/``gateway_id``; empty if none."""
    size = len(text.encode())
    if size > MAX_CONFIG_BYTES:
        return [f"the config is {size} bytes, more than {MAX_CONFIG_BYTES}"]
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        return [f"not TOML: {err}"]
    problems: list[str] = []
    for key, expected in (("store_id", store_id), ("gateway_id", gateway_id)):
        value = document.get(key)
        if value is None:
            problems.append(f"{key} is missing: it must be {expected!r}")
        elif value != expected:
            problems.append(f"{key} is {value!r}: a push may not move a gateway, it must stay {expected!r}")
    mqtt = document.get("mqtt")
    if isinstance(mqtt, dict) and "password" in mqtt:
        problems.append("mqtt.password is written inline: name a 0600 file on the gateway with mqtt.password_file")
    return problems


def sha256_of(text: str) -> str:
    """The SHA-256 (hex) of the text as pushed."""
    return hashlib.sha256(text.encode()).hexdigest()


def config_status(result_status: str, detail: str) -> str:
    """The config's status for its command's result status (and detail)."""
    if result_status == "failed" and detail.startswith("rolled back"):
        return "rolled_back"
    return CONFIG_STATUS_OF.get(result_status, result_status)


async def next_version(session: AsyncSession, store_id: str, gateway_id: str) -> int:
    """The version number the next push of this gateway gets: 1, 2, 3..."""
    highest = (
        await session.execute(
            select(func.max(GatewayConfig.version)).where(
                GatewayConfig.store_id == store_id, GatewayConfig.gateway_id == gateway_id
            )
        )
    ).scalar_one_or_none()
    return (highest or 0) + 1


async def history(session: AsyncSession, store_id: str, gateway_id: str) -> Sequence[GatewayConfig]:
    """The gateway's pushed configs, newest first (at most :data:`HISTORY_KEPT_IN_ANSWER`)."""
    return (
        (
            await session.execute(
                select(GatewayConfig)
                .where(GatewayConfig.store_id == store_id, GatewayConfig.gateway_id == gateway_id)
                .order_by(GatewayConfig.version.desc())
                .limit(HISTORY_KEPT_IN_ANSWER)
            )
        )
        .scalars()
        .all()
    )


async def open_push(session: AsyncSession, store_id: str, gateway_id: str, *, now: datetime) -> GatewayConfig | None:
    """The gateway's push still waiting for its outcome (pending or on probation), if its command has not expired.

    Past its command's expiry a push no longer blocks the next one: a gateway that took it and never answered
    (wiped, replaced) must not stop its store's configs for good.
    """
    row = (
        await session.execute(
            select(GatewayConfig)
            .join(OutgoingCommand, OutgoingCommand.command_id == GatewayConfig.command_id)
            .where(
                GatewayConfig.store_id == store_id,
                GatewayConfig.gateway_id == gateway_id,
                GatewayConfig.status.in_(OPEN_STATUSES),
                OutgoingCommand.expires_at > now,
            )
            .order_by(GatewayConfig.version.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return row
