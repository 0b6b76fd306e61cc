"""The Mosquitto configuration production uses, rendered from the gateways and hubs; written and reloaded.

:func:`render_acl` and :func:`render_mosquitto_conf` are pure: a list of identities in, text out.
:func:`write_broker_files` puts them beside copies of the CA's certificate, the broker's key pair and
the CRL in one directory, each file replaced atomically (one after the other; the broker is told only
once all are written), and :func:`reload_broker` makes a running Mosquitto take them: SIGHUP rereads
the ACL, the CRL and its own key pair (Mosquitto 2.0.11, tested). :func:`sync_broker` does both for
the gateway registry.

What the configuration enforces:

- one TLS listener that requires a client certificate signed by the hub's CA and not in the CRL;
- the certificate's common name is the MQTT username (``use_identity_as_username``) and the client id
  (``use_username_as_clientid``), so a gateway cannot take over another's session or the hub's;
- no anonymous access, and an ACL with a block per identity and no pattern lines: a certificate whose
  name is not listed (a gateway revoked, or one the registry does not know) may do nothing;
- a gateway writes only its own events, status, health and command results and reads only its own
  acks, commands and config; only a hub writes acks, commands, config and alerts;
- a packet above what the agent ever sends ends the connection that sent it (:data:`MAX_PACKET_SIZE`).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from hub.pki.authority import CertificateAuthority
from hub.pki.identity import GatewayIdentity, check_hub_name
from hub.pki.settings import BrokerSettings
from storegate import wire
from storegate.private_files import private_dir, write_private

log = structlog.get_logger(__name__)

TLS_PORT: Final = 8883
ALERT_TOPICS: Final = "storegate/alerts/#"
# Reserved for configuration pushed by the hub; the ACL grants it now so adding it needs no broker change.
CONFIG_CHANNEL: Final = "config"

# The largest payload the agent sends: encode_batches() closes an EventBatch before it passes
# wire.MAX_MESSAGE_BYTES (the hub's wire.decode() rejects anything larger too).
LARGEST_PAYLOAD: Final = wire.MAX_MESSAGE_BYTES
# max_packet_size bounds the whole packet: the payload plus its fixed header, topic (under 200 bytes)
# and MQTT 5 properties (under 100), so 16 KiB of margin. Mosquitto 2.0 reads a packet's announced
# length first and disconnects a client that announces more, before buffering it, so a 64 MiB message
# costs the broker nothing. message_size_limit would read it whole and then drop it, and Mosquitto 2.0
# itself recommends max_packet_size in its place, so it is not set.
PACKET_MARGIN: Final = 16 * 1024
MAX_PACKET_SIZE: Final = LARGEST_PAYLOAD + PACKET_MARGIN

_GATEWAY_WRITES: Final = (wire.Channel.EVENTS, wire.Channel.STATUS, wire.Channel.HEALTH, wire.Channel.COMMAND_RESULTS)
_GATEWAY_READS: Final = (wire.Channel.ACK.value, wire.Channel.COMMANDS.value, CONFIG_CHANNEL)
_HUB_READS: Final = _GATEWAY_WRITES
_HUB_WRITES: Final = (wire.Channel.ACK.value, wire.Channel.COMMANDS.value, CONFIG_CHANNEL)


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Where the broker finds its files: the directory on the broker's host, which may differ from where
    they are written (``storegate hub broker-config --out build/ --deploy-dir /etc/mosquitto/storegate``)."""

    directory: Path

    @property
    def conf(self) -> Path:
        """The Mosquitto configuration file."""
        return self.directory / "mosquitto.conf"

    @property
    def acl(self) -> Path:
        """The ACL file."""
        return self.directory / "acl"

    @property
    def ca(self) -> Path:
        """The CA's certificate: the only issuer of client certificates the broker trusts."""
        return self.directory / "ca.crt"

    @property
    def cert(self) -> Path:
        """The broker's server certificate."""
        return self.directory / "broker.crt"

    @property
    def key(self) -> Path:
        """The broker's private key."""
        return self.directory / "broker.key"

    @property
    def crl(self) -> Path:
        """The revocation list."""
        return self.directory / "crl.pem"


def render_acl(gateways: Iterable[GatewayIdentity], hubs: Iterable[str]) -> str:
    """The ACL: one block per hub, then one per gateway, sorted, no pattern lines, nothing anonymous."""
    lines = [
        "# Written by the Storegate hub (storegate hub broker-config); rewritten as gateways are added and revoked.",
        "# No topic lines before the first user: anonymous clients get nothing. A name not listed gets nothing.",
        "",
    ]
    root = wire.TOPIC_ROOT
    for hub in sorted(set(hubs)):
        lines += [f"# hub {check_hub_name(hub)}", f"user {hub}"]
        # Filters with + also cover $share/<group>/... subscriptions: Mosquitto checks the filter without it.
        lines += [f"topic read {root}/+/+/{channel.value}" for channel in _HUB_READS]
        lines += [f"topic write {root}/+/+/{channel}" for channel in _HUB_WRITES]
        lines += [f"topic readwrite {ALERT_TOPICS}", ""]
    for gateway in sorted(set(gateways)):
        prefix = f"{root}/{gateway.store_id}/{gateway.gateway_id}"
        lines += [f"# gateway {gateway}", f"user {gateway.common_name}"]
        lines += [f"topic write {prefix}/{channel.value}" for channel in _GATEWAY_WRITES]
        lines += [f"topic read {prefix}/{channel}" for channel in _GATEWAY_READS]
        lines.append("")
    return "\n".join(lines)


def render_mosquitto_conf(
    files: BrokerFiles,
    *,
    port: int = TLS_PORT,
    bind_address: str | None = None,
    persistence_dir: Path | None = None,
    run_as: str | None = None,
) -> str:
    """mosquitto.conf for one TLS listener with client certificates, the ACL and the CRL of ``files``.

    ``run_as`` is the user a Mosquitto started as root changes to (its ``user`` option; default
    ``mosquitto``); that user must be able to read the files.
    """
    lines = [
        "# Written by the Storegate hub (storegate hub broker-config). See docs/security.md before editing.",
        *([f"user {run_as}"] if run_as else []),
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {files.acl}",
        f"max_packet_size {MAX_PACKET_SIZE}",
        # A retained message whose publisher has since lost the right (a revoked gateway) is not replayed.
        "check_retain_source true",
        "max_queued_messages 100000",
        "max_inflight_messages 1000",
        "persistent_client_expiration 7d",
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages true",
    ]
    if persistence_dir is not None:
        lines += ["persistence true", f"persistence_location {persistence_dir}/"]
    else:
        lines.append("persistence false")
    lines += [
        "",
        f"listener {port} {bind_address}" if bind_address else f"listener {port}",
        "protocol mqtt",
        f"cafile {files.ca}",
        f"certfile {files.cert}",
        f"keyfile {files.key}",
        f"crlfile {files.crl}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
    ]
    return "\n".join(lines) + "\n"


def write_broker_files(
    authority: CertificateAuthority,
    out: Path,
    *,
    gateways: Iterable[GatewayIdentity] | None = None,
    hubs: Iterable[str] | None = None,
    deploy_dir: Path | None = None,
    port: int = TLS_PORT,
    bind_address: str | None = None,
    persistence_dir: Path | None = None,
    run_as: str | None = None,
    owner: str | None = None,
) -> BrokerFiles:
    """Write the broker's files into ``out`` (0700; each file 0600, replaced atomically); returns their paths.

    ``gateways`` and ``hubs`` default to those the CA holds a live certificate for; the registry passes
    its own list (a gateway it has removed gets no ACL block even before its certificate is revoked).
    The CRL is re-signed first, so its nextUpdate moves on with every write. The configuration names the
    files as they will be on the broker's host: ``deploy_dir``, else ``out``. ``owner`` (a user name;
    needs root) is given the directory and the files, so a Mosquitto running as that user can read them.
    """
    authority.refresh_crl()
    private_dir(out)
    written = BrokerFiles(out)
    named = BrokerFiles((deploy_dir or out).absolute())
    gateway_list = authority.live_gateways() if gateways is None else list(gateways)
    hub_list = authority.live_hubs() if hubs is None else list(hubs)
    write_private(written.ca, authority.ca_cert_path.read_bytes())
    write_private(written.cert, authority.broker_cert_path.read_bytes())
    write_private(written.key, authority.broker_key_path.read_bytes())
    write_private(written.crl, authority.crl_path.read_bytes())
    write_private(written.acl, render_acl(gateway_list, hub_list))
    write_private(
        written.conf,
        render_mosquitto_conf(
            named, port=port, bind_address=bind_address, persistence_dir=persistence_dir, run_as=run_as
        ),
    )
    if owner is not None:
        for path in (out, written.ca, written.cert, written.key, written.crl, written.acl, written.conf):
            shutil.chown(path, user=owner, group=None)
    log.info("broker_files_written", directory=str(out), gateways=len(gateway_list), hubs=len(hub_list))
    return written


def sync_broker(
    authority: CertificateAuthority,
    settings: BrokerSettings,
    *,
    gateways: Iterable[GatewayIdentity] | None = None,
    hubs: Iterable[str] | None = None,
) -> BrokerFiles | None:
    """After a gateway is added or revoked: rewrite the broker's files where ``settings`` says and reload it.

    Returns the files written, or None when ``settings.files_dir`` is unset (the hub manages no broker).
    """
    if settings.files_dir is None:
        return None
    files = write_broker_files(
        authority,
        settings.files_dir,
        gateways=gateways,
        hubs=hubs,
        deploy_dir=settings.deploy_dir,
        port=settings.port,
        bind_address=settings.bind_address,
        persistence_dir=settings.persistence_dir,
        run_as=settings.run_as,
        owner=settings.owner,
    )
    if settings.pid_file is not None:
        reload_broker(read_pid_file(settings.pid_file))
    return files


def reload_broker(pid: int) -> None:
    """Send SIGHUP to the Mosquitto process ``pid``: it rereads the ACL, the CRL, its certificate and key.

    Mosquitto 2.0.11 reloads each listener's TLS context on SIGHUP, ``crlfile`` included
    (tests/hub/pki/test_broker_tls.py proves it): a revoked certificate's next handshake fails, and the
    revoked name's ACL block is gone, so a connection it had open before may no longer publish or receive.
    """
    os.kill(pid, signal.SIGHUP)
    log.info("broker_reload_signalled", pid=pid)


def read_pid_file(path: Path) -> int:
    """The process id in a pid file (Mosquitto's ``pid_file``, or systemd's)."""
    return int(path.read_text().strip())
