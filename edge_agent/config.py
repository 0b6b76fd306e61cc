"""The edge agent's config file: one pydantic model per section, unknown keys rejected.

Example ``agent.toml``::

    store_id = "store-0042"
    gateway_id = "gw-1"

    [mqtt]
    host = "hub.example.net"
    username = "store-0042-gw-1"
    password_file = "mqtt-password"  # mode 0600; or STOREGATE_AGENT_MQTT__PASSWORD in the environment

    [outbox]
    path = "outbox.sqlite"          # relative to this file's directory
    max_events = 2000000            # the quota; beyond it telemetry is evicted first (and reported)
    max_bytes = 1073741824

    [health]
    metrics_port = 9101

    [print_jobs]                    # optional: pick lists wait here for their printer
    warn_after_s = 600              # a job waiting longer is a health problem

    [snapshots]                     # camera stills: kept next to the outbox, uploaded with the mqtt TLS files
    hub_url = "https://hub.example.net:8443"
    quota_mb = 200

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
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Discriminator, Field, SecretStr, Tag, ValidationError, model_validator

from device_drivers.profile_base import ProfileId
from device_drivers.profiles import ProfileCatalog, load_catalog, parse_settings
from device_drivers.simulated.sequence import SimulatedSequenceConfig
from device_drivers.simulated.temperature import SimulatedSensorConfig
from storegate.configfile import ConfigError, describe_validation_error, did_you_mean, load_model
from storegate.mqtt import MqttSettings
from storegate.secret_files import SecretFileError
from storegate.wire import MAX_BATCH_EVENTS, DeviceId, GatewayId, StoreId

log = structlog.get_logger(__name__)

# The broker password (or the file that holds it) from the environment, e.g. a systemd unit's
# Environment= or LoadCredential=; named like the hub's STOREGATE_HUB_MQTT__PASSWORD. They take
# precedence over agent.toml.
PASSWORD_ENV: Final = "STOREGATE_AGENT_MQTT__PASSWORD"  # noqa: S105 (a variable name)
PASSWORD_FILE_ENV: Final = "STOREGATE_AGENT_MQTT__PASSWORD_FILE"  # noqa: S105 (a variable name)


class ConfigModel(BaseModel):
    """Base of every config section: unknown keys are an error, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


DEFAULT_MAX_EVENTS: Final = 2_000_000
DEFAULT_MAX_BYTES: Final = 1024**3


class OutboxConfig(ConfigModel):
    """Where events wait until the hub acknowledges them, and how they are sent."""

    path: Path = Field(
        default=Path("outbox.sqlite"), description="SQLite file; relative paths are relative to the config file"
    )
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


class ProfiledDeviceConfig(ConfigModel):
    """A device driven through a profile of ``firmware_configs/``: shelves, scanners, sensors, doors.

    Either ``address`` (a device that is always there: an RS-485 bus, a 1-Wire probe, an
    I2C sensor, a GPIO pin) or ``identity`` (the stable key of a hot-plugged device, as the
    gateway reported it in ``device.attached`` or ``device.unknown``, so its id, profile and
    settings follow it across unplug and replug).
    """

    driver: Literal["profile"] = "profile"
    device_id: DeviceId
    profile: ProfileId
    address: str | None = Field(default=None, min_length=1, max_length=256, description="e.g. '/dev/ttyUSB0'")
    identity: str | None = Field(
        default=None, min_length=1, max_length=128, description="a hot-plugged device's stable key: 'usb-0c2e:0b61-A1'"
    )
    settings: dict[str, Any] = Field(default_factory=dict, description="the profile kind's settings, checked on load")

    @model_validator(mode="after")
    def _address_or_identity(self) -> ProfiledDeviceConfig:
        if (self.address is None) == (self.identity is None):
            raise ValueError("give either 'address' (a fixed device) or 'identity' (a hot-plugged one), not both")
        return self


def _driver_tag(value: Any) -> str:
    """The ``driver`` of a [[devices]] entry; entries that name a ``profile`` may leave it out."""
    if isinstance(value, dict):
        return str(value.get("driver", "profile"))
    return str(getattr(value, "driver", "profile"))


# One entry of [[devices]], told apart by its ``driver`` key ("profile" when it is left out).
DeviceConfig = Annotated[
    Annotated[SimulatedSensorConfig, Tag("simulated-temperature")]
    | Annotated[SimulatedSequenceConfig, Tag("simulated-sequence")]
    | Annotated[ProfiledDeviceConfig, Tag("profile")],
    Discriminator(
        _driver_tag,
        custom_error_type="unknown_driver",
        custom_error_message="unknown driver: use 'simulated-temperature' or 'simulated-sequence', "
        "or name a 'profile' (and leave 'driver' out) for a real device",
    ),
]


class HotplugConfig(ConfigModel):
    """Finding devices as they are plugged in and out, and where extra device profiles are."""

    enabled: bool = Field(default=True, description="watch for devices arriving and leaving")
    watch: Literal["auto", "udev", "poll"] = Field(
        default="auto", description="udev events (Linux), polling the port list, or udev when it works"
    )
    poll_interval_s: float = Field(default=2.0, gt=0, le=60, description="seconds between scans")
    profiles_dir: Path | None = Field(default=None, description="more device profiles, beside the shipped ones")
    w1_root: Path = Field(default=Path("/sys/bus/w1/devices"), description="where 1-Wire probes appear")


class PrintJobsConfig(ConfigModel):
    """The durable print queue (:mod:`edge_agent.print_jobs`); every key has a default, the section is optional."""

    path: Path | None = Field(
        default=None, description="SQLite file of the print jobs; default print-jobs.sqlite beside the outbox"
    )
    max_waiting: int = Field(default=1000, gt=0, le=100_000, description="jobs waiting at most; beyond, refused")
    attempt_timeout_s: float = Field(
        default=120.0, gt=0, le=3600, description="an attempt the printer has not confirmed by then is retried"
    )
    retry_initial_s: float = Field(default=2.0, gt=0, le=600, description="first wait before a retry or a new look")
    retry_max_s: float = Field(default=60.0, gt=0, le=3600, description="longest wait between retries or looks")
    warn_after_s: float = Field(
        default=600.0, gt=0, description="a job waiting longer than this is a health problem, in words"
    )
    keep_ended_s: float = Field(
        default=7 * 24 * 3600.0,
        ge=0,
        description="ended jobs are kept this long after their result was acknowledged, to answer a redelivery",
    )

    @model_validator(mode="after")
    def _retry_bounds(self) -> PrintJobsConfig:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must not be below retry_initial_s")
        return self


DEFAULT_SNAPSHOT_QUOTA_MB: Final = 200


class SnapshotsConfig(ConfigModel):
    """``[snapshots]``: where stills wait for the hub, how much disk they may take, and where the hub is."""

    dir: Path | None = Field(default=None, description="the spool; default: 'snapshots' next to the outbox")
    quota_mb: int = Field(
        default=DEFAULT_SNAPSHOT_QUOTA_MB,
        ge=1,
        le=1_000_000,
        description="disk for stills at most; beyond, the oldest go",
    )
    hub_url: str | None = Field(
        default=None,
        pattern=r"^https://[^/\s]+$",
        description="the hub's gateway listener, e.g. 'https://hub.example.net:8443'; unset: stills are only kept",
    )
    timeout_s: float = Field(default=30.0, gt=0, le=600, description="one upload's time limit")
    retry_max_s: float = Field(default=60.0, gt=0, le=3600, description="the longest wait between retries")


class RenewalConfig(ConfigModel):
    """``[renewal]``: the agent renews its certificate with the hub's gateway listener before it ends."""

    enabled: bool = Field(default=True, description="renew the certificate (needs mqtt.cert_file and a hub_url)")
    hub_url: str | None = Field(
        default=None,
        pattern=r"^https://[^/\s]+$",
        description="the hub's gateway listener; default: [snapshots] hub_url (enrolment writes it there)",
    )
    remaining_fraction: float = Field(
        default=1 / 3,
        gt=0,
        lt=1,
        description="renew once this fraction of the certificate's lifetime is left (default: a third)",
    )
    check_interval_s: float = Field(default=3600.0, gt=0, le=86_400, description="how often the dates are checked")
    retry_s: float = Field(default=300.0, gt=0, le=86_400, description="the wait after a renewal that failed")


class AgentConfig(ConfigModel):
    """The whole agent config file."""

    store_id: StoreId
    gateway_id: GatewayId
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    # Every outbox key has a default: a config needs no [outbox] section (outbox.sqlite beside the file).
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    hotplug: HotplugConfig = Field(default_factory=HotplugConfig)
    print_jobs: PrintJobsConfig = Field(default_factory=PrintJobsConfig)
    snapshots: SnapshotsConfig = Field(default_factory=SnapshotsConfig)
    renewal: RenewalConfig = Field(default_factory=RenewalConfig)
    devices: list[DeviceConfig] = Field(default_factory=list, max_length=256)

    @model_validator(mode="after")
    def _device_ids_unique(self) -> AgentConfig:
        seen: set[str] = set()
        for device in self.devices:
            if device.device_id in seen:
                raise ValueError(f"device_id {device.device_id!r} appears more than once in [[devices]]")
            seen.add(device.device_id)
        identities = [d.identity for d in self.devices if isinstance(d, ProfiledDeviceConfig) and d.identity]
        if len(identities) != len(set(identities)):
            raise ValueError("an identity appears more than once in [[devices]]")
        return self

    @model_validator(mode="after")
    def _uploads_need_the_gateway_certificate(self) -> AgentConfig:
        # The hub's gateway listener knows a gateway by its client certificate only: no password, no token.
        if self.snapshots.hub_url is not None and (self.mqtt.cert_file is None or self.mqtt.key_file is None):
            raise ValueError(
                "snapshots.hub_url needs the gateway's certificate: set mqtt.cert_file and mqtt.key_file "
                "(the hub knows a gateway's uploads by it)"
            )
        return self


def _resolved(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _resolved_optional(path: Path | None, base: Path) -> Path | None:
    return None if path is None else _resolved(path, base)


def load_agent_config(path: Path, *, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read and validate an agent config file; raises ConfigError naming the file and each bad key.

    Relative file paths (the outbox, the TLS files, the password file) are taken relative to
    the config file's directory, so the agent does not depend on its working directory. The
    broker password may come from the environment (:data:`PASSWORD_ENV`, :data:`PASSWORD_FILE_ENV`,
    read from ``environ``, by default ``os.environ``); a password file or TLS key that group or
    others can read is refused; a password written in the file itself is warned about.
    """
    config = load_model(AgentConfig, path)
    base = path.resolve().parent
    hotplug = config.hotplug.model_copy(update={"profiles_dir": _resolved_optional(config.hotplug.profiles_dir, base)})
    config = config.model_copy(update={"hotplug": hotplug})
    problems = device_problems(config, catalog_of(config))
    if problems:
        raise ConfigError(path, problems)
    outbox_path = _resolved(config.outbox.path, base)
    mqtt = config.mqtt.model_copy(
        update={
            "ca_file": _resolved_optional(config.mqtt.ca_file, base),
            "cert_file": _resolved_optional(config.mqtt.cert_file, base),
            "key_file": _resolved_optional(config.mqtt.key_file, base),
            "password_file": _resolved_optional(config.mqtt.password_file, base),
        }
    )
    mqtt = _password_from_environment(mqtt, os.environ if environ is None else environ)
    if config.mqtt.password is not None:
        # Still accepted, so that an upgrade does not stop a gateway; but the config file is
        # read by people and tools that have no business with the broker password.
        log.warning(
            "mqtt_password_inline",
            config=str(path),
            config_mode=f"{path.stat().st_mode & 0o777:04o}",
            fix=f"move it to a file of mode 0600 named by mqtt.password_file, or to {PASSWORD_ENV}",
        )
    try:
        mqtt.check_secret_files()
    except SecretFileError as err:
        raise ConfigError(path, [f"mqtt: {err}"]) from None
    print_jobs = config.print_jobs.model_copy(update={"path": _resolved_optional(config.print_jobs.path, base)})
    snapshots = config.snapshots.model_copy(update={"dir": _resolved_optional(config.snapshots.dir, base)})
    return config.model_copy(
        update={
            "outbox": config.outbox.model_copy(update={"path": outbox_path}),
            "mqtt": mqtt,
            "print_jobs": print_jobs,
            "snapshots": snapshots,
        }
    )


def _password_from_environment(mqtt: MqttSettings, environ: Mapping[str, str]) -> MqttSettings:
    """``mqtt`` with the password or password file the environment gives, which replace the file's."""
    if password := environ.get(PASSWORD_ENV):
        return mqtt.model_copy(update={"password": SecretStr(password), "password_file": None})
    if password_file := environ.get(PASSWORD_FILE_ENV):
        return mqtt.model_copy(update={"password": None, "password_file": Path(password_file).expanduser().resolve()})
    return mqtt


def print_jobs_path(config: AgentConfig) -> Path:
    """Where the print jobs are kept: ``print_jobs.path``, or ``print-jobs.sqlite`` beside the outbox."""
    return config.print_jobs.path or config.outbox.path.with_name("print-jobs.sqlite")


def catalog_of(config: AgentConfig) -> ProfileCatalog:
    """The device profiles this agent knows: the shipped ones and ``hotplug.profiles_dir``'s (ConfigError if bad)."""
    extra = config.hotplug.profiles_dir
    return load_catalog(*([] if extra is None else [extra]))


def device_problems(config: AgentConfig, catalog: ProfileCatalog) -> list[str]:
    """One line per [[devices]] entry whose profile is unknown or whose settings its profile refuses."""
    problems: list[str] = []
    for index, device in enumerate(config.devices):
        if not isinstance(device, ProfiledDeviceConfig):
            continue
        where = f"devices.{index}"
        try:
            profile = catalog.get(device.profile)
        except KeyError as err:
            problems.append(f"{where}.profile: {err.args[0]}{did_you_mean(device.profile, catalog.profiles)}")
            continue
        try:
            parse_settings(profile, device.settings)
        except ValidationError as err:
            problems.extend(f"{where}.settings.{line}" for line in describe_validation_error(err))
    return problems


def config_hash(config: AgentConfig) -> str:
    """SHA-256 (hex) of the canonical JSON of the config, for telling the hub which config a gateway runs.

    Secrets are dumped masked, so a password change does not change the hash and
    the hash reveals nothing about the password.
    """
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
