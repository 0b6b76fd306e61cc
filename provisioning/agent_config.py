"""Writing a gateway's agent config: validated with the agent's own model before it is saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from edge_agent.config import AgentConfig
from storegate.configfile import describe_validation_error


def agent_config_document(
    *,
    store_id: str,
    gateway_id: str,
    broker_host: str,
    broker_port: int,
    username: str | None,
    outbox: Path,
) -> dict[str, Any]:
    """The TOML document of a new gateway's config; raises ValueError naming any bad value."""
    mqtt: dict[str, Any] = {"host": broker_host, "port": broker_port}
    if username is not None:
        mqtt["username"] = username
    document: dict[str, Any] = {
        "store_id": store_id,
        "gateway_id": gateway_id,
        "mqtt": mqtt,
        "outbox": {"path": str(outbox)},
    }
    try:
        AgentConfig.model_validate(document)
    except ValidationError as err:
        raise ValueError("invalid gateway settings:\n" + "\n".join(describe_validation_error(err))) from err
    return document


def write_agent_config(
    path: Path,
    *,
    store_id: str,
    gateway_id: str,
    broker_host: str,
    broker_port: int,
    username: str | None,
    outbox: Path,
) -> None:
    """Validate and write a gateway's config file (the broker password is provisioned separately)."""
    document = agent_config_document(
        store_id=store_id,
        gateway_id=gateway_id,
        broker_host=broker_host,
        broker_port=broker_port,
        username=username,
        outbox=outbox,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tomli_w.dumps(document).encode())
