"""The ``storegate`` command: ``hub`` (``backup``, ``restore``, ``gateways``, ``pki``, ``broker-config``),
``agent``, ``provision`` and ``demo``.

Each subcommand imports its side lazily, so ``storegate --help`` stays quick on
a Raspberry Pi and the agent never loads the hub's web stack. A gateway installs
``storegate[edge]`` and a hub ``storegate[hub]``; a subcommand whose side is not
installed says which extra to install instead of ending in a traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import typer

from storegate import __version__
from storegate.log_options import LogFormat, LogLevel, request_log_options
from storegate.process import EXIT_CONFIG

# Storegate's own top-level packages: a missing one is a broken install, not a missing extra.
_OWN_PACKAGES = frozenset({"storegate", "launcher", "edge_agent", "hub", "device_drivers", "provisioning"})


@contextlib.contextmanager
def installed(command: str, extra: Literal["edge", "hub", "demo"]) -> Iterator[None]:
    """Around a side's lazy import: a third-party package it lacks becomes a sentence naming the extra, exit 2."""
    try:
        yield
    except ModuleNotFoundError as err:
        missing = (err.name or "").partition(".")[0]
        if not missing or missing in _OWN_PACKAGES:
            raise
        typer.echo(
            f"storegate {command} needs the package {missing!r}, which is not installed here; "
            f"install this side with: pip install 'storegate[{extra}]'",
            err=True,
        )
        raise typer.Exit(EXIT_CONFIG) from err


app = typer.Typer(
    name="storegate",
    help="Storegate: edge gateway and central hub for chain stores.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
provision_app = typer.Typer(
    help="Field provisioning: enrol a gateway, write and check its configuration.",
    no_args_is_help=True,
)
app.add_typer(provision_app, name="provision")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"storegate {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Storegate: edge gateway and central hub for chain stores."""


hub_app = typer.Typer(
    help="Run the hub (MQTT consumer, database, API and dashboard); manage its operators, tokens, gateways and "
    "their certificates, the broker's configuration; back up and restore its database.",
)
app.add_typer(hub_app, name="hub")

# Every service's logging (storegate.log_options): kept in the environment, so the demo's parts log the same way.
LogFormatOption = Annotated[
    LogFormat | None,
    typer.Option(
        "--log-format",
        case_sensitive=False,
        help="json (one object a line) or console (readable lines); default: json to a pipe or journald, "
        "console on a terminal. Also STOREGATE_LOG_FORMAT.",
        show_default=False,
    ),
]
LogLevelOption = Annotated[
    LogLevel | None,
    typer.Option(
        "--log-level",
        case_sensitive=False,
        help="The least severe level written: DEBUG, INFO, WARNING, ERROR or CRITICAL; default: INFO (the hub: its "
        "log_level setting, which this overrides). Also STOREGATE_LOG_LEVEL.",
        show_default=False,
    ),
]

HubConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Hub TOML config file. Every key can also be set by an environment variable "
        "STOREGATE_HUB_<KEY> (nested keys with __, e.g. STOREGATE_HUB_MQTT__PORT).",
    ),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(help="SQLAlchemy URL: sqlite+aiosqlite:///path.sqlite3 or postgresql+asyncpg://user@host/db."),
]


@hub_app.callback(invoke_without_command=True)
def hub(
    ctx: typer.Context,
    config: HubConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address the API and dashboard listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port the API and dashboard listen on.")] = None,
    database_url: DatabaseUrlOption = None,
    role: Annotated[
        str | None,
        typer.Option(
            "--role",
            help="all (default: one hub process), api (HTTP only) or worker (MQTT consumer and operations; "
            "N workers share a subscription, docs/scaling.md).",
        ),
    ] = None,
    log_format: LogFormatOption = None,
    log_level: LogLevelOption = None,
) -> None:
    """Run the hub: MQTT consumer, database, API and dashboard. ``storegate hub backup|restore`` for its database."""
    request_log_options(log_format, log_level)
    if ctx.invoked_subcommand is not None:
        return
    with installed("hub", "hub"):
        from hub.runner import run_hub

    overrides = {
        key: value
        for key, value in (("http_host", host), ("http_port", port), ("database_url", database_url), ("role", role))
        if value is not None
    }
    raise typer.Exit(run_hub(config, overrides))


def _hub_database_options(
    ctx: typer.Context, config: Path | None, database_url: str | None
) -> tuple[Path | None, dict[str, str]]:
    """The subcommand's --config and --database-url, else those given before it (``storegate hub -c x backup``)."""
    parent = ctx.parent.params if ctx.parent is not None else {}
    config = config if config is not None else parent.get("config")
    database_url = database_url if database_url is not None else parent.get("database_url")
    return config, {"database_url": database_url} if database_url is not None else {}


BackupKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="Key (hex) that signs the backup's manifest; default: backup.key in the hub's secrets_dir, "
        "made on the first backup.",
        show_default=False,
    ),
]


@hub_app.command("backup")
def hub_backup(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(
            help="Backup file to write: a SQLite file, or a pg_dump custom-format archive for PostgreSQL.",
            show_default=False,
        ),
    ],
    config: HubConfigOption = None,
    database_url: DatabaseUrlOption = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing backup file.")] = False,
    key_file: BackupKeyOption = None,
) -> None:
    """Back up the hub's database while the hub runs: one consistent snapshot (see docs/backup.md)."""
    with installed("hub backup", "hub"):
        from hub.admin.backup import run_backup

    config, overrides = _hub_database_options(ctx, config, database_url)
    raise typer.Exit(run_backup(config, overrides, path, overwrite=force, key_file=key_file))


gateways_app = typer.Typer(
    help="The gateway registry: a gateway (STORE/GATEWAY) must be added before the hub accepts anything from it.",
    no_args_is_help=True,
)
hub_app.add_typer(gateways_app, name="gateways")
GatewayArgument = Annotated[
    str, typer.Argument(help="The gateway as STORE/GATEWAY, e.g. store-0042/gw-1.", show_default=False)
]
ByOption = Annotated[str | None, typer.Option("--by", help="Who makes the change (default: cli:<login name>).")]


def _gateways_database_options(
    ctx: typer.Context, config: Path | None, database_url: str | None
) -> tuple[Path | None, dict[str, str]]:
    """The options of ``storegate hub [options] gateways <command> [options]``: the command's, else the hub's."""
    hub_ctx = ctx.parent.parent if ctx.parent is not None and ctx.parent.parent is not None else ctx.parent
    parent = hub_ctx.params if hub_ctx is not None else {}
    config = config if config is not None else parent.get("config")
    database_url = database_url if database_url is not None else parent.get("database_url")
    return config, {"database_url": database_url} if database_url is not None else {}


@gateways_app.command("add")
def hub_gateways_add(
    ctx: typer.Context,
    gateway: GatewayArgument,
    config: HubConfigOption = None,
    database_url: DatabaseUrlOption = None,
    by: ByOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Directory for the gateway's gateway.crt, gateway.key (0600) and ca.crt (when the hub runs the CA).",
        ),
    ] = None,
) -> None:
    """Enrol a gateway: from now on the hub accepts its events, status, health and command results.

    When the hub runs the gateways' CA (storegate hub pki init), this also issues the gateway's client certificate
    and key into --out and lets it in at the broker.
    """
    with installed("hub gateways add", "hub"):
        from hub.fleet.commands import run_add

    config, overrides = _gateways_database_options(ctx, config, database_url)
    raise typer.Exit(run_add(config, overrides, gateway, by=by, out=out))


@gateways_app.command("revoke")
def hub_gateways_revoke(
    ctx: typer.Context,
    gateway: GatewayArgument,
    config: HubConfigOption = None,
    database_url: DatabaseUrlOption = None,
    by: ByOption = None,
) -> None:
    """Revoke a gateway: nothing it sends is accepted from now on; what it sent before stays.

    When the hub runs the gateways' CA, its certificates are revoked too and the broker refuses it (CRL and ACL).
    """
    with installed("hub gateways revoke", "hub"):
        from hub.fleet.commands import run_revoke

    config, overrides = _gateways_database_options(ctx, config, database_url)
    raise typer.Exit(run_revoke(config, overrides, gateway, by=by))


@gateways_app.command("list")
def hub_gateways_list(
    ctx: typer.Context,
    config: HubConfigOption = None,
    database_url: DatabaseUrlOption = None,
    store: Annotated[str | None, typer.Option(help="Only this store's gateways.")] = None,
) -> None:
    """List the gateways, enrolled and revoked, with who enrolled or revoked them and when."""
    with installed("hub gateways list", "hub"):
        from hub.fleet.commands import run_list

    config, overrides = _gateways_database_options(ctx, config, database_url)
    raise typer.Exit(run_list(config, overrides, store_id=store))


@hub_app.command("restore")
def hub_restore(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Backup file made by storegate hub backup.", show_default=False)],
    config: HubConfigOption = None,
    database_url: DatabaseUrlOption = None,
    force: Annotated[bool, typer.Option(help="Replace a database that holds rows.")] = False,
    key_file: BackupKeyOption = None,
    unverified: Annotated[
        bool,
        typer.Option(
            help="Restore a backup without a manifest, or whose signature cannot be checked (no key). "
            "A backup that does not match its manifest is refused all the same."
        ),
    ] = False,
) -> None:
    """Restore the hub's database from a backup and migrate it to this version; stop the hub first."""
    with installed("hub restore", "hub"):
        from hub.admin.backup import run_restore

    config, overrides = _hub_database_options(ctx, config, database_url)
    raise typer.Exit(run_restore(config, overrides, path, force=force, key_file=key_file, unverified=unverified))


pki_app = typer.Typer(
    help="The hub as the gateways' certificate authority: make it, issue and revoke client certificates.",
    no_args_is_help=True,
)
hub_app.add_typer(pki_app, name="pki")


def _hub_settings_options(ctx: typer.Context, config: Path | None) -> tuple[Path | None, dict[str, str]]:
    """--config of the subcommand, else of ``storegate hub`` (``pki`` sits two levels below it)."""
    parent = ctx.parent
    while config is None and parent is not None:
        config = parent.params.get("config")
        parent = parent.parent
    return config, {}


@pki_app.command("init")
def hub_pki_init(
    ctx: typer.Context,
    config: HubConfigOption = None,
    broker_host: Annotated[
        list[str] | None,
        typer.Option(help="A host name or IP the broker's certificate is valid for (repeat; default: broker.hosts)."),
    ] = None,
) -> None:
    """Make the CA in <secrets_dir>/pki, the broker's server certificate and the hub's client certificate."""
    with installed("hub pki", "hub"):
        from hub.pki.commands import run_pki_init

    config, overrides = _hub_settings_options(ctx, config)
    raise typer.Exit(run_pki_init(config, overrides, broker_hosts=broker_host or []))


@pki_app.command("issue")
def hub_pki_issue(
    ctx: typer.Context,
    gateway: GatewayArgument,
    out: Annotated[Path, typer.Option("--out", help="Directory for gateway.crt, gateway.key (0600) and ca.crt.")],
    config: HubConfigOption = None,
    days: Annotated[int, typer.Option(min=1, max=3650, help="Days the certificate is valid.")] = 825,
) -> None:
    """Issue a gateway's client certificate and key; rewrites the broker's files when broker.files_dir is set."""
    with installed("hub pki", "hub"):
        from hub.pki.commands import run_pki_issue

    config, overrides = _hub_settings_options(ctx, config)
    raise typer.Exit(run_pki_issue(config, overrides, gateway, out, days=days))


@pki_app.command("revoke")
def hub_pki_revoke(ctx: typer.Context, gateway: GatewayArgument, config: HubConfigOption = None) -> None:
    """Revoke a gateway's certificates: the CRL lists them and the ACL drops the gateway."""
    with installed("hub pki", "hub"):
        from hub.pki.commands import run_pki_revoke

    config, overrides = _hub_settings_options(ctx, config)
    raise typer.Exit(run_pki_revoke(config, overrides, gateway))


@pki_app.command("renew")
def hub_pki_renew(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(help="broker or hub", show_default=False)],
    config: HubConfigOption = None,
    broker_host: Annotated[
        list[str] | None, typer.Option(help="For the broker: its host names and IPs (repeat; default: broker.hosts).")
    ] = None,
) -> None:
    """Replace the broker's or the hub's certificate and key (rotation; docs/security.md)."""
    with installed("hub pki", "hub"):
        from hub.pki.commands import run_pki_renew

    config, overrides = _hub_settings_options(ctx, config)
    raise typer.Exit(run_pki_renew(config, overrides, what, broker_hosts=broker_host or []))


@pki_app.command("list")
def hub_pki_list(ctx: typer.Context, config: HubConfigOption = None) -> None:
    """List every certificate the CA issued: kind, name, serial, expiry, revoked or live."""
    with installed("hub pki", "hub"):
        from hub.pki.commands import run_pki_list

    config, overrides = _hub_settings_options(ctx, config)
    raise typer.Exit(run_pki_list(config, overrides))


@hub_app.command("broker-config")
def hub_broker_config(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory to write into (default: broker.files_dir).")
    ] = None,
    config: HubConfigOption = None,
) -> None:
    """Write the production Mosquitto config: TLS with client certificates, the ACL and the CRL (docs/security.md)."""
    with installed("hub broker-config", "hub"):
        from hub.pki.commands import run_broker_config

    config, overrides = _hub_settings_options(ctx, config)
    raise typer.Exit(run_broker_config(config, overrides, out))


# --------------------------------------------------------------------------- hub users and tokens

users_app = typer.Typer(help="The hub's operators: add (the first admin too), list, disable.", no_args_is_help=True)
hub_app.add_typer(users_app, name="users")
tokens_app = typer.Typer(help="API tokens for integrations: create (shown once), list, revoke.", no_args_is_help=True)
hub_app.add_typer(tokens_app, name="tokens")

RoleOption = Annotated[str, typer.Option("--role", help="admin, ops, technician or viewer (docs/security.md).")]
StoresOption = Annotated[
    list[str] | None, typer.Option("--store", help="Only this store (repeat for more); none: every store.")
]
RegionsOption = Annotated[
    list[str] | None, typer.Option("--region", help="Only the stores of this region (repeat for more).")
]


def _parent_options(
    ctx: typer.Context, config: Path | None, database_url: str | None
) -> tuple[Path | None, dict[str, str]]:
    """--config and --database-url of the command, else of ``storegate hub`` two levels up."""
    hub_ctx = ctx.parent.parent if ctx.parent is not None and ctx.parent.parent is not None else None
    parent = hub_ctx.params if hub_ctx is not None else {}
    config = config if config is not None else parent.get("config")
    database_url = database_url if database_url is not None else parent.get("database_url")
    return config, {"database_url": database_url} if database_url is not None else {}


def _read_password(password_file: Path | None) -> str:
    """From --password-file, else a prompt on a terminal (asked twice), else the first line of stdin."""
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            typer.echo(f"cannot read {password_file}: {err.strerror or err}", err=True)
            raise typer.Exit(EXIT_CONFIG) from err
        return lines[0] if lines else ""
    if sys.stdin.isatty():
        password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        return password
    return sys.stdin.readline().rstrip("\r\n")


@users_app.command("add")
def hub_users_add(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="The operator's sign-in name.", show_default=False)],
    role: RoleOption,
    store: StoresOption = None,
    region: RegionsOption = None,
    password_file: Annotated[
        Path | None, typer.Option(help="Read the password from this file's first line (never give it as an argument).")
    ] = None,
    config: HubConfigOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Add an operator; the password is asked for (or read from --password-file or stdin). Makes the first admin."""
    with installed("hub users", "hub"):
        from hub.auth.cli import users_add

    password = _read_password(password_file)
    config, overrides = _parent_options(ctx, config, database_url)
    raise typer.Exit(
        users_add(
            config,
            overrides,
            username=username,
            role=role,
            password=password,
            store_ids=store or [],
            regions=region or [],
        )
    )


@users_app.command("list")
def hub_users_list(ctx: typer.Context, config: HubConfigOption = None, database_url: DatabaseUrlOption = None) -> None:
    """List the operators: name, role, stores, enabled."""
    with installed("hub users", "hub"):
        from hub.auth.cli import users_list

    config, overrides = _parent_options(ctx, config, database_url)
    raise typer.Exit(users_list(config, overrides))


@users_app.command("disable")
def hub_users_disable(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="The operator to disable.", show_default=False)],
    config: HubConfigOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Disable an operator: no more sign-ins, its sessions end."""
    with installed("hub users", "hub"):
        from hub.auth.cli import users_disable

    config, overrides = _parent_options(ctx, config, database_url)
    raise typer.Exit(users_disable(config, overrides, username))


@tokens_app.command("create")
def hub_tokens_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What uses the token, e.g. prometheus.", show_default=False)],
    role: RoleOption,
    expires_in: Annotated[str, typer.Option("--expires-in", help="Lifetime: days or hours, e.g. 90d or 12h.")],
    store: StoresOption = None,
    region: RegionsOption = None,
    config: HubConfigOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create an API token and print it once."""
    with installed("hub tokens", "hub"):
        from hub.auth.cli import parse_lifetime, tokens_create

    try:
        lifetime = parse_lifetime(expires_in)
    except ValueError as err:
        typer.echo(f"--expires-in: {err}", err=True)
        raise typer.Exit(EXIT_CONFIG) from err
    config, overrides = _parent_options(ctx, config, database_url)
    raise typer.Exit(
        tokens_create(
            config, overrides, name=name, role=role, lifetime=lifetime, store_ids=store or [], regions=region or []
        )
    )


@tokens_app.command("list")
def hub_tokens_list(ctx: typer.Context, config: HubConfigOption = None, database_url: DatabaseUrlOption = None) -> None:
    """List the tokens (never their text): name, role, stores, state, expiry."""
    with installed("hub tokens", "hub"):
        from hub.auth.cli import tokens_list

    config, overrides = _parent_options(ctx, config, database_url)
    raise typer.Exit(tokens_list(config, overrides))


@tokens_app.command("revoke")
def hub_tokens_revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(help="The token's id (from tokens list).", show_default=False)],
    config: HubConfigOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Revoke a token: it stops working at once."""
    with installed("hub tokens", "hub"):
        from hub.auth.cli import tokens_revoke

    config, overrides = _parent_options(ctx, config, database_url)
    raise typer.Exit(tokens_revoke(config, overrides, token_id))


agent_app = typer.Typer(
    help="Run the edge agent of one store gateway (devices, durable outbox, MQTT uplink), or ask how it is doing.",
)
app.add_typer(agent_app, name="agent")


AgentConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Agent TOML config file (see docs/operations.md); default: $STOREGATE_AGENT_CONFIG, else agent.toml "
        "in the gateway home ($STOREGATE_AGENT_HOME, /var/lib/storegate).",
        show_default=False,
    ),
]


def _agent_config(ctx: typer.Context, config: Path | None) -> Path:
    """--config of the command, else of ``storegate agent``, else the gateway home's (``default_config_path``)."""
    parent = ctx.parent.params if ctx.parent is not None else {}
    given = config if config is not None else parent.get("config")
    if given is not None:
        return Path(given)
    from provisioning.layout import default_config_path

    default = default_config_path()
    if not default.exists():
        typer.echo(
            f"no agent config at {default} (the default); name one with --config FILE or STOREGATE_AGENT_CONFIG",
            err=True,
        )
        raise typer.Exit(EXIT_CONFIG)
    return default


@agent_app.callback(invoke_without_command=True)
def agent(
    ctx: typer.Context,
    config: AgentConfigOption = None,
    log_format: LogFormatOption = None,
    log_level: LogLevelOption = None,
) -> None:
    """Run the edge agent: ``storegate agent [--config agent.toml]``; ``storegate agent status`` reports on it."""
    request_log_options(log_format, log_level)
    if ctx.invoked_subcommand is not None:
        return
    path = _agent_config(ctx, config)
    with installed("agent", "edge"):
        from edge_agent.runner import run_agent
        from launcher.releases import run_agent_releases

    # The release `current` names runs, watched by this (the installation's) code: docs/updates.md.
    raise typer.Exit(run_agent_releases(path, lambda: run_agent(path), own_version=__version__))


@agent_app.command("status")
def agent_status(
    ctx: typer.Context,
    config: AgentConfigOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document: the assessment and the status file as written.")
    ] = False,
) -> None:
    """Say how the agent is doing: broker (and why not), devices, backlog, oldest unacknowledged event, rates."""
    path = _agent_config(ctx, config)
    with installed("agent status", "edge"):
        from edge_agent.status import agent_status as describe

    text, code = describe(path, as_json=as_json)
    typer.echo(text, err=code == 2 and not as_json)
    raise typer.Exit(code)


@app.command("simulate-store", hidden=True)
def simulate_store(
    workdir: Annotated[Path, typer.Option(help="Where the simulated devices live; devices.json is written here.")],
    seed: Annotated[int, typer.Option(help="Seeds customers, noise and sensor series, so runs repeat.")] = 0,
    log_format: LogFormatOption = None,
    log_level: LogLevelOption = None,
) -> None:
    """Run the demo's simulated store devices (shelf, till scanner, sensors, freezer door) until SIGTERM."""
    request_log_options(log_format, log_level)
    with installed("simulate-store", "edge"):
        from device_drivers.simulated.runner import run_simulated_store

    raise typer.Exit(run_simulated_store(workdir, seed=seed))


@app.command()
def demo(
    http_port: Annotated[int, typer.Option(help="Port of the hub's API and dashboard.")] = 8000,
    broker: Annotated[
        str,
        typer.Option(help="auto: Mosquitto when installed, else the embedded broker; or mosquitto, or embedded."),
    ] = "auto",
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the demo's databases and configs here (default: a temporary directory)."),
    ] = None,
    log_format: LogFormatOption = None,
    log_level: LogLevelOption = None,
) -> None:
    """Run a whole demo on this machine: broker, hub with dashboard, and one simulated store."""
    request_log_options(log_format, log_level)  # for its parts: the hub, the agent and the simulated devices
    with installed("demo", "demo"):
        from launcher.demo import DemoOptions, run_demo

    if broker not in {"auto", "mosquitto", "embedded"}:
        typer.echo(f"--broker must be auto, mosquitto or embedded, not {broker!r}", err=True)
        raise typer.Exit(2)
    raise typer.Exit(run_demo(DemoOptions(http_port=http_port, broker=broker, data_dir=data_dir)))


@provision_app.command("agent-config")
def provision_agent_config(
    store_id: Annotated[str, typer.Option(help="The store's id, e.g. store-0042.")],
    gateway_id: Annotated[str, typer.Option(help="This gateway's id within the chain, e.g. gw-1.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the agent's TOML config.")],
    broker_host: Annotated[str, typer.Option(help="The hub's MQTT broker.")] = "127.0.0.1",
    broker_port: Annotated[int, typer.Option(help="The broker's port.")] = 1883,
    username: Annotated[str | None, typer.Option(help="Broker user name of this gateway.")] = None,
    outbox: Annotated[Path, typer.Option(help="Outbox database path, relative to the config file.")] = Path(
        "outbox.sqlite3"
    ),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    tls_ca: Annotated[
        Path | None, typer.Option(help="CA certificate (PEM) to check the broker by; any --tls-* option turns TLS on.")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="This gateway's client certificate (PEM), issued by the hub's CA.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="The client certificate's private key (PEM); must be mode 0600.")
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option(help="File holding the broker password (mode 0600); the config names it.")
    ] = None,
) -> None:
    """Write a validated agent config (0600) for one gateway, with its TLS files and broker password file.

    The files are checked first: they exist, the key and the password file are private, the
    certificate and the key belong together and the CA signed the certificate.
    """
    with installed("provision agent-config", "edge"):
        from provisioning.agent_config import TlsFiles, write_agent_config

    if output.exists() and not force:
        typer.echo(f"{output} exists; pass --force to overwrite it", err=True)
        raise typer.Exit(2)
    try:
        write_agent_config(
            output,
            store_id=store_id,
            gateway_id=gateway_id,
            broker_host=broker_host,
            broker_port=broker_port,
            username=username,
            outbox=outbox,
            files=TlsFiles(ca_file=tls_ca, cert_file=tls_cert, key_file=tls_key, password_file=password_file),
        )
    except ValueError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    typer.echo(f"wrote {output}")


@provision_app.command("check")
def provision_check(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Agent TOML config file to check (default: $STOREGATE_AGENT_CONFIG, else the gateway home's).",
            show_default=False,
        ),
    ] = None,
    connect: Annotated[
        bool,
        typer.Option(
            "--connect",
            help="Also try the way to the hub step by step: DNS, TCP, TLS, MQTT login, a publish, the hub's ack "
            "(stop the agent first).",
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(min=1, max=120, help="Seconds each --connect step may take.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="With --connect: the steps as one JSON document.")] = False,
) -> None:
    """Check an agent config file and say what is wrong with it, key by key, its TLS files included."""
    with installed("provision check", "edge"):
        from edge_agent.config import load_agent_config
        from provisioning.agent_config import tls_problems
        from provisioning.layout import default_config_path
    from storegate.configfile import ConfigError

    config = config if config is not None else default_config_path()
    if connect:
        from provisioning.connect_check import run_connect_check

        text, code = run_connect_check(config, as_json=as_json, timeout_s=timeout)
        typer.echo(text, err=code == EXIT_CONFIG)
        raise typer.Exit(code)
    try:
        loaded = load_agent_config(config)
    except ConfigError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    problems = tls_problems(loaded.mqtt)
    if problems:
        typer.echo(str(ConfigError(config, problems)), err=True)
        raise typer.Exit(2)
    typer.echo(f"{config}: valid for store {loaded.store_id}, gateway {loaded.gateway_id}")


@provision_app.command("detect")
def provision_detect(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Agent config: its extra profiles and [hotplug] settings, and the devices it names already "
            "(default: none; the shipped profiles).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of text.")] = False,
    add: Annotated[
        bool,
        typer.Option(
            "--add",
            help="Add the recognised devices the config does not name yet to it (default config: the gateway "
            "home's) and restart the agent's service.",
        ),
    ] = False,
    systemd_runtime_dir: Annotated[Path, typer.Option(hidden=True)] = Path("/run/systemd/system"),
) -> None:
    """List every device plugged in, the profile it matched and the [[devices]] entry to paste (or --add it);
    unknown devices with their ids. Exit 1 when a device is unknown or a configured one is not plugged in."""
    with installed("provision detect", "edge"):
        from provisioning.detect import run_detect
        from provisioning.layout import default_config_path
        from provisioning.service import AgentService

    if add and config is None:
        config = default_config_path()
    text, code = run_detect(config, as_json=as_json, add=add, service=AgentService(runtime_dir=systemd_runtime_dir))
    typer.echo(text, err=code == 2)
    raise typer.Exit(code)


@provision_app.command("selftest")
def provision_selftest(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Agent TOML config (default: $STOREGATE_AGENT_CONFIG, else the gateway home's).",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before each device: test them all.")] = False,
    timeout: Annotated[float, typer.Option(min=1, max=600, help="Seconds each device's step may take.")] = 60.0,
    slot: Annotated[int, typer.Option(min=1, max=255, help="The shelf slot the known weight goes on.")] = 1,
    weight_g: Annotated[float, typer.Option(min=50, max=50_000, help="The known weight, in grams.")] = 500.0,
    as_json: Annotated[bool, typer.Option("--json", help="The report as one JSON document.")] = False,
    upload_only: Annotated[
        bool, typer.Option("--upload-only", help="Only send the reports the hub has not taken yet.")
    ] = False,
    systemd_runtime_dir: Annotated[Path, typer.Option(hidden=True)] = Path("/run/systemd/system"),
) -> None:
    """Walk through every configured device with the technician: scan the code shown, put the known weight on a
    slot, open and close the door, read each sensor; pass or fail for each, and a report. The agent's service is
    stopped meanwhile and started again afterwards."""
    with installed("provision selftest", "edge"):
        from provisioning.layout import default_config_path
        from provisioning.selftest import SelftestOptions, TerminalPrompter, run_selftest_command
        from provisioning.service import AgentService

    options = SelftestOptions(step_timeout_s=timeout, shelf_slot=slot, weight_g=weight_g)
    prompter = TerminalPrompter(yes=yes, echo=lambda line: typer.echo(line, err=as_json))
    text, code = run_selftest_command(
        config if config is not None else default_config_path(),
        options=options,
        prompter=prompter,
        as_json=as_json,
        upload_only=upload_only,
        service=AgentService(runtime_dir=systemd_runtime_dir),
    )
    typer.echo(text, err=code == EXIT_CONFIG)
    raise typer.Exit(code)


def _storegate_executable() -> Path:
    """The storegate command that runs now (its absolute path), for the units that will run it again."""
    import shutil

    found = shutil.which("storegate") or sys.argv[0]
    return Path(found).absolute()


@provision_app.command("enroll")
def provision_enroll(
    hub: Annotated[str | None, typer.Option(help="The hub's address, e.g. https://hub.example.net.")] = None,
    token: Annotated[str | None, typer.Option(help="The one-time enrolment token the hub showed.")] = None,
    link: Annotated[str | None, typer.Option(help="The enrolment link instead of --hub and --token.")] = None,
    from_file: Annotated[
        Path | None, typer.Option(help="An enrolment file (storegate provision bundle); deleted once enrolled.")
    ] = None,
    home: Annotated[
        Path | None, typer.Option(help="The gateway home (default /var/lib/storegate or STOREGATE_AGENT_HOME).")
    ] = None,
    unit_dir: Annotated[Path, typer.Option(help="Where the agent's systemd unit is written.")] = Path(
        "/etc/systemd/system"
    ),
    user: Annotated[str, typer.Option(help="The account the agent's unit runs as.")] = "storegate",
    hub_ca: Annotated[
        Path | None, typer.Option(help="Trust this CA (PEM) for the hub's HTTPS instead of the system's CAs.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Enrol again over an existing config and key.")] = False,
    systemd_runtime_dir: Annotated[Path, typer.Option(hidden=True)] = Path("/run/systemd/system"),
) -> None:
    """Enrol this gateway with a one-time token: make its key here, get its certificate, write its config, start it.

    Exit 0 enrolled, 1 something to try again (the hub unreachable), 2 refused (the reason is printed).
    """
    with installed("provision enroll", "edge"):
        from provisioning.enroll import (
            EnrolFailedError,
            EnrolmentFile,
            EnrolOptions,
            EnrolRefusedError,
            enroll,
            token_and_hub,
        )
        from provisioning.layout import GatewayHome, gateway_home

    try:
        if from_file is not None:
            read = EnrolmentFile.read(from_file)
            hub_url, text = read.hub_url, read.token
        else:
            hub_url, text = token_and_hub(hub=hub, token=token, link=link)
        done = enroll(
            EnrolOptions(
                hub_url=hub_url,
                token=text,
                home=GatewayHome(home) if home is not None else gateway_home(),
                unit_dir=unit_dir,
                executable=_storegate_executable(),
                user=user,
                hub_ca=hub_ca,
                force=force,
                systemd_runtime_dir=systemd_runtime_dir,
                from_file=from_file,
            )
        )
    except EnrolRefusedError as err:
        typer.echo(f"not enrolled: {err}", err=True)
        raise typer.Exit(2) from err
    except EnrolFailedError as err:
        typer.echo(f"not enrolled: {err}", err=True)
        raise typer.Exit(1) from err
    for line in done.lines:
        typer.echo(line)


@provision_app.command("bundle")
def provision_bundle(
    out: Annotated[Path, typer.Option(help="Where to write the files, e.g. the SD card's boot partition.")],
    hub: Annotated[str | None, typer.Option(help="The hub's address, e.g. https://hub.example.net.")] = None,
    token: Annotated[str | None, typer.Option(help="The one-time enrolment token the hub showed.")] = None,
    link: Annotated[str | None, typer.Option(help="The enrolment link instead of --hub and --token.")] = None,
    boot_path: Annotated[
        Path, typer.Option(help="Where the gateway will see --out once booted (the unit names the file there).")
    ] = Path("/boot/firmware"),
    home: Annotated[Path, typer.Option(help="The gateway home on the gateway.")] = Path("/var/lib/storegate"),
    qr: Annotated[bool, typer.Option(help="Print the enrolment link as a QR code.")] = True,
) -> None:
    """Write an enrolment file (0600) and the first-boot unit, so a gateway enrols itself when it first boots."""
    with installed("provision bundle", "edge"):
        from provisioning.bundle import qr_code, write_bundle
        from provisioning.enroll import EnrolRefusedError, token_and_hub

    try:
        hub_url, text = token_and_hub(hub=hub, token=token, link=link)
        bundle = write_bundle(
            out, hub_url=hub_url, token=text, executable=_storegate_executable(), home=home, boot_path=boot_path
        )
    except EnrolRefusedError as err:
        typer.echo(f"no bundle written: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(f"wrote {bundle.enrolment_file} (0600: it holds the token) and {bundle.unit_file}")
    typer.echo(
        f"the gateway image needs {bundle.unit_file.name} once, in /etc/systemd/system and enabled "
        f"(systemctl enable {bundle.unit_file.name}); then it enrols on first boot and deletes the file"
    )
    typer.echo(f"enrolment link: {bundle.link}")
    if qr:
        typer.echo(qr_code(bundle.link))


def run() -> None:
    """Console entry point."""
    app(prog_name="storegate")
