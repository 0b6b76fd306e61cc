"""The edge agent's config file: one pydantic model per section, unknown keys rejected.

Example ``agent.toml``::

    store_id = "store-0042"
    gateway_id = "gw-1"

    [mqtt]
    host = "hub.example.net"

    [outbox]
    path = "outbox.sqlite"          # relative to this file's directory
    max_events = 2000000            # the quota; beyond it telemetry is evicted first (and reported)
    max_bytes = 1073741824

    [health]
    metrics_port = 9101

    [[devices]]
    device_id = "chiller-1-temp"
    driver = "simulated-temperature"
    zone = "chiller-1"

    [[devices]]                     # numbers its readings and replays after a restart
    device_id = "door-1"
    driver = "simulated-sequence"
    kind = "door.contact"
    count = 5000
    rate_per_s = 10
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from device_drivers.simulated.sequence import SimulatedSequenceConfig
from device_drivers.simulated.temperature import SimulatedSensorConfig
from storegate.configfile import load_model
from storegate.mqtt import MqttSettings
from storegate.wire import MAX_BATCH_EVENTS, GatewayId, StoreId


class ConfigModel(BaseModel):
    """Base of every config section: unknown keys are an error, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


DEFAULT_MAX_EVENTS: Final = 2_000_000
DEFAULT_MAX_BYTES: Final = 1024**3


class OutboxConfig(ConfigModel):
    """Where events wait until the hub acknowledges them, and how they are sent."""

    path: Path = Field(description="SQLite file; relative paths are relative to the config file")
    max_batch: int = Field(default=500, gt=0, le=MAX_BATCH_EVENTS, description="events per MQTT message")
    max_in_flight: int = Field(default=5000, gt=0, description="published but unacknowledged events at most")
    ack_timeout_s: float = Field(default=10.0, gt=0, le=3600, description="resend when the hub is silent this long")
    commit_max_events: int = Field(default=1000, gt=0, le=100_000, description="events per SQLite transaction")
    queue_size: int = Field(default=10_000, gt=0, description="readings waiting to be written, at most")
    # Sized for a Raspberry Pi's SD card: at ~300 bytes an event, a few days of a busy store offline.
    max_events: int = Field(
        default=DEFAULT_MAX_EVENTS, ge=10, description="events kept at most; beyond, the least important are evicted"
    )
    max_bytes: int = Field(
        default=DEFAULT_MAX_BYTES,
        ge=64 * 1024,
        description="bytes of stored events at most (JSON plus a fixed per-row overhead); beyond, eviction",
    )


class HealthConfig(ConfigModel):
    """Self-reporting: the retained health message and the Prometheus endpoint."""

    interval_s: float = Field(default=30.0, gt=0, le=3600, description="seconds between health messages")
    metrics_host: str = Field(default="127.0.0.1", min_length=1, description="address the metrics server binds")
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Prometheus /metrics port; 0 picks a free one, unset turns it off"
    )


# One entry of [[devices]], told apart by its ``driver`` key.
DeviceConfig = Annotated[SimulatedSensorConfig | SimulatedSequenceConfig, Field(discriminator="driver")]


class AgentConfig(ConfigModel):
    """The whole agent config file."""

    store_id: StoreId
    gateway_id: GatewayId
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    outbox: OutboxConfig
    health: HealthConfig = Field(default_factory=HealthConfig)
    devices: list[DeviceConfig] = Field(default_factory=list, max_length=256)

    @model_validator(mode="after")
    def _device_ids_unique(self) -> AgentConfig:
        seen: set[str] = set()
        for device in self.devices:
            if device.device_id in seen:
                raise ValueError(f"device_id {device.device_id!r} appears more than once in [[devices]]")
            seen.add(device.device_id)
        return self


def _resolved(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _resolved_optional(path: Path | None, base: Path) -> Path | None:
    return None if path is None else _resolved(path, base)


def load_agent_config(path: Path) -> AgentConfig:
    """Read and validate an agent config file; raises ConfigError naming the file and each bad key.

    Relative file paths (the outbox and the TLS files) are taken relative to the
    config file's directory, so the agent does not depend on its working directory.
    """
    config = load_model(AgentConfig, path)
    base = path.resolve().parent
    outbox_path = _resolved(config.outbox.path, base)
    mqtt = config.mqtt.model_copy(
        update={
            "ca_file": _resolved_optional(config.mqtt.ca_file, base),
            "cert_file": _resolved_optional(config.mqtt.cert_file, base),
            "key_file": _resolved_optional(config.mqtt.key_file, base),
        }
    )
    return config.model_copy(update={"outbox": config.outbox.model_copy(update={"path": outbox_path}), "mqtt": mqtt})


def config_hash(config: AgentConfig) -> str:
    """SHA-256 (hex) of the canonical JSON of the config, for telling the hub which config a gateway runs.

    Secrets are dumped masked, so a password change does not change the hash and
    the hash reveals nothing about the password.
    """
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
