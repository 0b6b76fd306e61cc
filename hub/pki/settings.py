"""Where the hub writes the broker's files and how it makes the broker reload them (``[broker]`` in hub.toml)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_BROKER_HOSTS: Final = ("localhost", "127.0.0.1", "::1")


class BrokerSettings(BaseModel):
    """The production broker as the hub's CA sees it: its names, its files, its process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hosts: tuple[str, ...] = Field(
        default=DEFAULT_BROKER_HOSTS,
        min_length=1,
        description="host names and IP addresses the broker's certificate is valid for (given at `pki init`)",
    )
    files_dir: Path | None = Field(
        default=None,
        description="where the hub writes mosquitto.conf, the ACL, the CRL and the broker's key pair; "
        "unset: the hub writes none and `storegate hub broker-config --out` does",
    )
    deploy_dir: Path | None = Field(
        default=None,
        description="where those files are on the broker's host, if not files_dir (as mosquitto.conf names them)",
    )
    port: int = Field(default=8883, ge=1, le=65535, description="the broker's TLS listener port")
    bind_address: str | None = Field(default=None, description="the listener's address; unset: all interfaces")
    persistence_dir: Path | None = Field(
        default=Path("/var/lib/mosquitto"), description="Mosquitto's persistence directory; unset: no persistence"
    )
    run_as: str | None = Field(default=None, description="Mosquitto's `user` option (it must read the files)")
    owner: str | None = Field(
        default=None, description="give the written files to this user (the hub must run as root)"
    )
    pid_file: Path | None = Field(
        default=None,
        description="the broker's pid file: the hub sends it SIGHUP after writing, which rereads the ACL and the CRL",
    )
