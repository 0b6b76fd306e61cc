"""``storegate hub pki init|issue|revoke|list`` and ``storegate hub broker-config``: 0 done, 1 failed, 2 bad settings.

Each prints what it did on stdout and a one-line reason on stderr; none prints a key.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hub.errors import HubError
from hub.pki.authority import LEAF_DAYS, CertificateAuthority
from hub.pki.broker import BrokerFiles, read_pid_file, reload_broker, sync_broker, write_broker_files
from hub.pki.identity import GatewayIdentity
from hub.settings import HubSettings, load_hub_settings
from storegate.configfile import ConfigError
from storegate.private_files import private_dir
from storegate.process import EXIT_CONFIG, EXIT_FAILED, EXIT_OK


def pki_directory(settings: HubSettings) -> Path:
    """Where the CA's files live: ``<secrets_dir>/pki``."""
    return settings.secrets_dir / "pki"


def open_authority(settings: HubSettings) -> CertificateAuthority:
    """The hub's CA (made by ``storegate hub pki init``), or PkiError."""
    return CertificateAuthority.open(pki_directory(settings))


def _run(config_path: Path | None, overrides: Mapping[str, Any], action: Callable[[HubSettings], str]) -> int:
    try:
        settings = load_hub_settings(config_path, **overrides)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    try:
        report = action(settings)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    except (HubError, OSError) as err:
        print(f"failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(report)
    return EXIT_OK


def _broker_note(files: BrokerFiles | None, settings: HubSettings) -> str:
    if files is None:
        return "broker files not written (no broker.files_dir): run `storegate hub broker-config --out DIR` and reload"
    reloaded = f"; SIGHUP sent to the pid in {settings.broker.pid_file}" if settings.broker.pid_file else ""
    return f"broker files rewritten in {files.directory}{reloaded}"


def run_pki_init(config_path: Path | None, overrides: Mapping[str, Any], *, broker_hosts: Sequence[str]) -> int:
    """Make the CA, the broker's server certificate and the hub's client certificate."""

    def action(settings: HubSettings) -> str:
        private_dir(settings.secrets_dir)
        hosts = tuple(broker_hosts) or settings.broker.hosts
        ca = CertificateAuthority.create(pki_directory(settings), broker_hosts=hosts, hub_name=settings.client_id)
        return "\n".join(
            [
                f"CA made in {ca.directory} (keep ca.key there and in the secrets backup only)",
                f"broker certificate for: {', '.join(hosts)}",
                f"hub client certificate for: {settings.client_id}; point the hub at it in hub.toml:",
                "  [mqtt]",
                "  tls = true",
                "  port = 8883",
                f'  ca_file = "{ca.ca_cert_path.absolute()}"',
                f'  cert_file = "{ca.hub_cert_path.absolute()}"',
                f'  key_file = "{ca.hub_key_path.absolute()}"',
            ]
        )

    return _run(config_path, overrides, action)


def run_pki_issue(
    config_path: Path | None, overrides: Mapping[str, Any], identity: str, out: Path, *, days: int = LEAF_DAYS
) -> int:
    """Issue STORE/GATEWAY a client certificate: gateway.crt, gateway.key (0600) and ca.crt into ``out``."""

    def action(settings: HubSettings) -> str:
        gateway = GatewayIdentity.parse(identity)
        ca = open_authority(settings)
        issued = ca.issue_gateway(gateway, days=days)
        cert, key, ca_file = issued.write(out, stem="gateway")
        files = sync_broker(ca, settings.broker)
        return "\n".join(
            [
                f"issued {gateway} serial {issued.record.serial:x}, valid until {issued.record.not_after:%Y-%m-%d}",
                f"  {cert}\n  {key} (0600: copy it to the gateway only)\n  {ca_file}",
                _broker_note(files, settings),
            ]
        )

    return _run(config_path, overrides, action)


def run_pki_revoke(config_path: Path | None, overrides: Mapping[str, Any], identity: str) -> int:
    """Revoke every certificate of STORE/GATEWAY: the CRL and the ACL drop it."""

    def action(settings: HubSettings) -> str:
        gateway = GatewayIdentity.parse(identity)
        ca = open_authority(settings)
        revoked = ca.revoke_gateway(gateway)
        files = sync_broker(ca, settings.broker)
        serials = ", ".join(f"{r.serial:x}" for r in revoked) or "none (nothing unrevoked)"
        return f"revoked {gateway}: {serials}\n{_broker_note(files, settings)}"

    return _run(config_path, overrides, action)


def run_pki_renew(
    config_path: Path | None, overrides: Mapping[str, Any], what: str, *, broker_hosts: Sequence[str]
) -> int:
    """Replace the broker's (``what='broker'``) or the hub's (``'hub'``) certificate and key in the CA directory."""

    def action(settings: HubSettings) -> str:
        ca = open_authority(settings)
        if what == "broker":
            hosts = tuple(broker_hosts) or settings.broker.hosts
            record = ca.renew_broker(hosts)
            files = sync_broker(ca, settings.broker)
            return f"new broker certificate {record.serial:x} for {', '.join(hosts)}\n{_broker_note(files, settings)}"
        if what == "hub":
            record = ca.renew_hub(settings.client_id)
            return f"new hub certificate {record.serial:x} in {ca.hub_cert_path}: restart the hub to use it"
        raise ConfigError(config_path, [f"renew what? 'broker' or 'hub', not {what!r}"])

    return _run(config_path, overrides, action)


def run_pki_list(config_path: Path | None, overrides: Mapping[str, Any]) -> int:
    """Every certificate the CA issued, one line each."""

    def action(settings: HubSettings) -> str:
        now = datetime.now(UTC)
        lines = []
        for r in open_authority(settings).records():
            state = f"revoked {r.revoked_at:%Y-%m-%d}" if r.revoked_at else ("live" if r.live(now) else "expired")
            lines.append(f"{r.kind:8} {r.name:40} {r.serial:040x} until {r.not_after:%Y-%m-%d} {state}")
        return "\n".join(lines)

    return _run(config_path, overrides, action)


def run_broker_config(config_path: Path | None, overrides: Mapping[str, Any], out: Path | None) -> int:
    """Write mosquitto.conf, the ACL, the CRL and the broker's key pair to ``out`` (else broker.files_dir)."""

    def action(settings: HubSettings) -> str:
        ca = open_authority(settings)
        b = settings.broker
        directory = out or b.files_dir
        if directory is None:
            raise ConfigError(config_path, ["give --out DIR or set broker.files_dir"])
        files = write_broker_files(
            ca,
            directory,
            deploy_dir=b.deploy_dir,
            port=b.port,
            bind_address=b.bind_address,
            persistence_dir=b.persistence_dir,
            run_as=b.run_as,
            owner=b.owner,
        )
        if b.pid_file is not None and out is None:
            reload_broker(read_pid_file(b.pid_file))
        return (
            f"wrote {files.conf}, {files.acl}, {files.crl}, {files.cert}, {files.key} (0600), {files.ca}\n"
            f"gateways in the ACL: {len(ca.live_gateways())} (from the CA's index); start Mosquitto with "
            f"-c {(b.deploy_dir or files.directory) / 'mosquitto.conf'}"
        )

    return _run(config_path, overrides, action)
