"""The hub's settings: a TOML file, then ``STOREGATE_HUB_*`` environment variables, then keyword overrides.

Precedence, highest first: keyword arguments of :func:`load_hub_settings`, environment
variables (``STOREGATE_HUB_MQTT__PORT=1884`` sets ``mqtt.port``), the TOML file, defaults.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal

import structlog
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from hub.alerting.notification_settings import NotificationSettings
from hub.auth.settings import AuthSettings
from hub.fleet.settings import EnrolmentSettings
from hub.footfall.settings import FootfallSettings
from hub.ingest.clock import EventClockSettings
from hub.pki.settings import BrokerSettings
from hub.releases.settings import ReleaseSettings
from hub.reports.settings import ReportSettings
from hub.snapshots.settings import SnapshotSettings
from storegate.configfile import ConfigError, describe_validation_error, read_toml
from storegate.env_names import unknown_variables
from storegate.mqtt import MqttSettings
from storegate.secret_files import SecretFileError

log = structlog.get_logger(__name__)

ENV_PREFIX: Final = "STOREGATE_HUB_"
ENV_NESTED_DELIMITER: Final = "__"

# The async drivers the hub is built and tested with.
SUPPORTED_DRIVERS: Final = ("sqlite+aiosqlite", "postgresql+asyncpg")

# What one hub process runs (docs/scaling.md, "Running N hub workers").
HubRole = Literal["all", "api", "worker"]

LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    BeforeValidator(lambda value: value.upper() if isinstance(value, str) else value),
]

# Values read from the TOML file for the settings being built now; see load_hub_settings.
_file_values: ContextVar[MappingProxyType[str, Any]] = ContextVar(
    "storegate_hub_file_values", default=MappingProxyType({})
)


class _FileSource(PydanticBaseSettingsSource):
    """The TOML file's values, at the lowest precedence of the explicit sources."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` hands over the whole file at once."""
        return _file_values.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_values.get())


class OperationsSettings(BaseModel):
    """How the hub applies events: rules ticks, shrink, snapshots, restock printing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="apply events to inventory and rules (off: store them only)")
    rules_tick_s: float = Field(default=5.0, gt=0, le=60, description="how often grace periods and escalations run")
    shrink_window_s: float = Field(
        default=3600.0, gt=0, description="items off a shelf and not sold within this long become shrink"
    )
    snapshot_window_s: float = Field(
        default=120.0, ge=0, description="a camera snapshot this close to a security alert is attached to it"
    )
    warm_up_hours: float = Field(
        default=6.0, ge=0, le=168, description="recent events replayed into the rules on start (open doors, timers)"
    )
    restock_printer_device_id: str = Field(
        default="receipt-printer",
        min_length=1,
        max_length=128,
        description="the device id of the receipt printer that prints pick lists, on each store's gateway",
    )


class HubSettings(BaseSettings):
    """Everything the hub process needs to know; built by :func:`load_hub_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        validate_default=True,
    )

    # repr=False: a PostgreSQL URL may carry a password.
    database_url: str = Field(
        default="sqlite+aiosqlite:///storegate-hub.sqlite3",
        repr=False,
        description="SQLAlchemy URL: sqlite+aiosqlite:///path or postgresql+asyncpg://user:password@host/db",
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="how the hub reaches the broker")
    client_id: str = Field(
        default="storegate-hub",
        min_length=1,
        max_length=128,
        description="MQTT client id; fixed, because the broker keeps the hub's persistent session under it",
    )
    shared_subscription_group: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$",
        description=(
            "subscribe as $share/<group>/... so several hub worker processes split the gateways' messages; needs "
            "mqtt.protocol = '5' and PostgreSQL, and turns on the shared mode (docs/scaling.md)"
        ),
    )
    role: HubRole = Field(
        default="all",
        description=(
            "what this process runs: 'all' (API, consumer and background senders: one hub process), 'api' (HTTP "
            "only, behind a load balancer), 'worker' (consumer and operations; HTTP serves /healthz and /metrics)"
        ),
    )
    secrets_dir: Path = Field(
        default=Path("storegate-hub-secrets"),
        description=(
            "the hub's private directory (made 0700): the gateway CA's key, the key that encrypts stored secrets; "
            "back it up apart from the database"
        ),
    )
    broker: BrokerSettings = Field(
        default_factory=BrokerSettings,
        description="the production broker's certificate names, files and reload (hub.pki; docs/security.md)",
    )
    http_host: str = Field(default="127.0.0.1", min_length=1)
    http_port: int = Field(default=8000, ge=1, le=65535)
    http_allowed_hosts: list[str] | None = Field(
        default=None,
        description=(
            "Host header values the API answers to (others get 400), e.g. ['hub.example.com']; '*.example.com' "
            "matches subdomains, '*' any; default: http_host, localhost, 127.0.0.1 and ::1"
        ),
    )
    http_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=1024**3, description="largest request body; larger ones get 413"
    )
    http_max_import_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        # The catalog reads a whole file into memory and refuses more than 32 MiB itself (hub.catalog.api).
        le=32 * 1024 * 1024,
        description="largest body of the catalog's CSV imports (/api/v1/catalog/.../import), at most 32 MiB",
    )
    http_tls_certfile: Path | None = Field(
        default=None, description="PEM certificate chain: the hub serves HTTPS itself (with http_tls_keyfile)"
    )
    http_tls_keyfile: Path | None = Field(default=None, description="PEM private key of http_tls_certfile")
    http_trusted_proxies: list[str] = Field(
        default_factory=list,
        description=(
            "addresses of reverse proxies whose X-Forwarded-For/-Proto the hub believes (uvicorn's "
            "forwarded_allow_ips), e.g. ['127.0.0.1']; default: none, so a client cannot claim to be https"
        ),
    )
    log_level: LogLevel = "INFO"
    gateway_offline_grace_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description=(
            "a gateway whose status says online but from which nothing (event, status, health) arrived for "
            "this long is shown as silent, not online; keep it above the agents' health interval"
        ),
    )
    max_events_per_transaction: int = Field(
        default=5000,
        ge=1,
        le=100_000,
        description="the consumer drains queued messages into one transaction up to this many events",
    )
    ingest_linger_ms: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description=(
            "group commit: when fewer than ingest_linger_messages are waiting, the consumer waits up to this "
            "long for more before starting a transaction (each transaction costs the hub several statements "
            "whatever it carries); 0 starts at once"
        ),
    )
    ingest_linger_messages: int = Field(
        default=32,
        ge=1,
        le=10_000,
        description="the linger ends as soon as this many messages are in hand (see ingest_linger_ms)",
    )
    event_clock: EventClockSettings = Field(
        default_factory=EventClockSettings,
        description="how far a gateway's clock may be off before its events are flagged (docs/operations.md)",
    )
    notifications: NotificationSettings = Field(
        default_factory=NotificationSettings,
        description="alert notifications: webhook retries and timeouts, the MQTT alert topic",
    )
    operations: OperationsSettings = Field(
        default_factory=OperationsSettings,
        description="inventory, restock, monitoring rules and alerts",
    )
    footfall: FootfallSettings = Field(
        default_factory=FootfallSettings,
        description="the footfall report: how checkout scans make sales transactions (docs/reports.md)",
    )
    reports: ReportSettings = Field(
        default_factory=ReportSettings,
        description="reports as files (the PDF font for Chinese names, the bundle's limit) and scheduled reports "
        "(retries, sizes, catch-up after downtime, the SMTP server for e-mail): docs/reports.md",
    )
    accept_unknown_gateways: bool = Field(
        default=False,
        description=(
            "accept a gateway the hub has never seen, enrolling it on its first message (recorded as first_contact); "
            "for demos only: otherwise a gateway must be enrolled (storegate hub gateways add STORE/GATEWAY) first"
        ),
    )
    auth: AuthSettings = Field(
        default_factory=AuthSettings,
        description="operators: session lifetime, throttling of failed sign-ins, API token lifetimes",
    )
    snapshots: SnapshotSettings = Field(
        default_factory=SnapshotSettings,
        description="camera stills: the gateway listener (client certificates only), their files and retention",
    )
    releases: ReleaseSettings = Field(
        default_factory=ReleaseSettings,
        description="releases of the agent software and their rollouts to gateways: docs/updates.md",
    )
    enrolment: EnrolmentSettings = Field(
        default_factory=EnrolmentSettings,
        description="gateways enrolling by one-time token and renewing their certificates; what they are told",
    )
    rejected_messages_keep: int = Field(
        default=10_000,
        ge=100,
        description="newest rows kept in rejected_messages; older ones are pruned so bad senders cannot fill the disk",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then the TOML file (no dotenv, no secrets dir)."""
        return init_settings, env_settings, _FileSource(settings_cls)

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        # The messages never echo the URL: it may hold a password.
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("not a database URL (expected e.g. sqlite+aiosqlite:///hub.sqlite3)") from None
        if url.drivername not in SUPPORTED_DRIVERS:
            raise ValueError(f"driver {url.drivername!r} is not supported; use one of {', '.join(SUPPORTED_DRIVERS)}")
        if url.drivername.startswith("sqlite") and url.database in (None, "", ":memory:"):
            raise ValueError("SQLite needs a file path: an in-memory database is lost on every connection")
        return value

    @model_validator(mode="after")
    def _tls_needs_both_files(self) -> HubSettings:
        if (self.http_tls_certfile is None) != (self.http_tls_keyfile is None):
            raise ValueError("http_tls_certfile and http_tls_keyfile go together: give both or neither")
        return self

    @model_validator(mode="after")
    def _shared_subscription_needs_v5(self) -> HubSettings:
        if self.shared_subscription_group is not None and self.mqtt.protocol != "5":
            raise ValueError("shared_subscription_group needs mqtt.protocol = '5' (shared subscriptions are MQTT 5)")
        return self

    @model_validator(mode="after")
    def _shared_subscription_needs_postgresql(self) -> HubSettings:
        # Workers sharing a subscription share rule states and take per-store locks in the database: PostgreSQL's
        # advisory locks. On SQLite a second process would only wait for its one write lock, and nothing is shared.
        if self.shared_subscription_group is not None and not self.database_url.startswith("postgresql"):
            raise ValueError(
                "shared_subscription_group needs PostgreSQL: N workers share rule states and per-store locks "
                "there (SQLite runs one hub process; leave shared_subscription_group unset)"
            )
        return self

    @model_validator(mode="after")
    def _split_roles_need_postgresql(self) -> HubSettings:
        if self.role != "all" and not self.database_url.startswith("postgresql"):
            raise ValueError(
                f"role = '{self.role}' needs PostgreSQL: API and worker processes apart share the database, and "
                "SQLite serves one hub process (role = 'all')"
            )
        return self

    @property
    def shared(self) -> bool:
        """Whether this process is one of N workers on a shared subscription (the shared mode)."""
        return self.shared_subscription_group is not None


def _env_var_of(location: tuple[int | str, ...]) -> str | None:
    """The environment variable that set the value at ``location``, if one did."""
    name = ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(part) for part in location)
    wanted = name.upper()
    return next((key for key in os.environ if key.upper() == wanted), None)


def _describe(err: ValidationError) -> list[str]:
    """describe_validation_error, with the database URL redacted and environment-sourced keys marked."""
    problems = describe_validation_error(err)
    described: list[str] = []
    for problem, item in zip(problems, err.errors(), strict=True):
        location = tuple(item["loc"])
        if location[:1] == ("database_url",):
            problem = f"database_url: {item['msg']}"
        source = _env_var_of(location) if location else None
        described.append(f"{problem} [from environment variable {source}]" if source else problem)
    return described


def load_hub_settings(path: Path | None, **overrides: Any) -> HubSettings:
    """Build the settings from ``path`` (if given), the environment and ``overrides``; raise ConfigError."""
    # Refused like an unknown key of the file: pydantic-settings would ignore it and leave the default in force.
    unknown = unknown_variables(HubSettings, os.environ, prefix=ENV_PREFIX, delimiter=ENV_NESTED_DELIMITER)
    if unknown:
        raise ConfigError(path, unknown)
    file_values = read_toml(path) if path is not None else {}
    token = _file_values.set(MappingProxyType(file_values))
    try:
        settings = HubSettings(**overrides)
    except ValidationError as err:
        # from None: the ValidationError's text would repeat the inputs, passwords included.
        raise ConfigError(path, _describe(err)) from None
    finally:
        _file_values.reset(token)
    _check_mqtt_secrets(path, file_values, settings)
    return settings


def _check_mqtt_secrets(path: Path | None, file_values: dict[str, Any], settings: HubSettings) -> None:
    """Refuse a broker password file or TLS key others may read; warn about a password written in the file."""
    try:
        settings.mqtt.check_secret_files()
    except SecretFileError as err:
        raise ConfigError(path, [f"mqtt: {err}"]) from None
    smtp = settings.reports.smtp
    if smtp is not None and smtp.password_file is not None:
        try:
            smtp.login_password()
        except SecretFileError as err:
            raise ConfigError(path, [f"reports.smtp: {err}"]) from None
    reports_section = file_values.get("reports")
    smtp_section = reports_section.get("smtp") if isinstance(reports_section, dict) else None
    if isinstance(smtp_section, dict) and "password" in smtp_section:
        log.warning(
            "smtp_password_inline",
            config=str(path),
            fix=f"move it to a file of mode 0600 named by reports.smtp.password_file, or to "
            f"{ENV_PREFIX}REPORTS__SMTP__PASSWORD",
        )
    mqtt_section = file_values.get("mqtt")
    if isinstance(mqtt_section, dict) and "password" in mqtt_section:
        log.warning(
            "mqtt_password_inline",
            config=str(path),
            fix=f"move it to a file of mode 0600 named by mqtt.password_file, or to {ENV_PREFIX}MQTT__PASSWORD",
        )
