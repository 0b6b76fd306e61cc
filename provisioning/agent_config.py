"""Writing a gateway's agent config: validated with the agent's own model before it is saved, 0600.

With TLS (``tls_problems``), the CA, the gateway's certificate and its key are checked before
they are written into the config, and again by ``storegate provision check``: every file is
there, the key is private, the certificate and the key belong together, and the CA signed the
certificate. The checks use the standard library's ``ssl`` (the same OpenSSL the agent's MQTT
link uses), so the gateway needs no extra package for them.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import tomli_w
from pydantic import ValidationError

from edge_agent.config import AgentConfig
from storegate.configfile import describe_validation_error
from storegate.mqtt import MqttSettings
from storegate.private_files import write_private
from storegate.secret_files import SecretFileError, read_secret_file, require_private_file

# Turns of a handshake in memory before it is given up (TLS 1.2 and 1.3 need two or three).
_HANDSHAKE_ROUNDS: Final = 10


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The TLS files and the broker password file a gateway is given; paths as the technician typed them."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    password_file: Path | None = None

    @property
    def tls(self) -> bool:
        """Whether any TLS file is given (then the agent connects over TLS)."""
        return any(path is not None for path in (self.ca_file, self.cert_file, self.key_file))


def agent_config_document(
    *,
    store_id: str,
    gateway_id: str,
    broker_host: str,
    broker_port: int,
    username: str | None,
    outbox: Path,
    files: TlsFiles | None = None,
    gateway_listener_url: str | None = None,
) -> dict[str, Any]:
    """The TOML document of a new gateway's config; raises ValueError naming any bad value.

    ``gateway_listener_url`` is the hub's gateway listener (``[snapshots] hub_url``: stills and certificate renewal).

    The TLS and password files are written as absolute paths, so the config means the same
    files wherever it is moved to.
    """
    files = files or TlsFiles()
    mqtt: dict[str, Any] = {"host": broker_host, "port": broker_port}
    if username is not None:
        mqtt["username"] = username
    if files.password_file is not None:
        mqtt["password_file"] = str(files.password_file.expanduser().resolve())
    if files.tls:
        mqtt["tls"] = True
        for key, path in (("ca_file", files.ca_file), ("cert_file", files.cert_file), ("key_file", files.key_file)):
            if path is not None:
                mqtt[key] = str(path.expanduser().resolve())
    document: dict[str, Any] = {
        "store_id": store_id,
        "gateway_id": gateway_id,
        "mqtt": mqtt,
        "outbox": {"path": str(outbox)},
    }
    if gateway_listener_url is not None:
        document["snapshots"] = {"hub_url": gateway_listener_url}
    try:
        config = AgentConfig.model_validate(document)
    except ValidationError as err:
        raise ValueError("invalid gateway settings:\n" + "\n".join(describe_validation_error(err))) from err
    problems = tls_problems(config.mqtt)
    if problems:
        raise ValueError("the TLS or password files cannot be used:\n" + "\n".join(f"  {p}" for p in problems))
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
    files: TlsFiles | None = None,
    gateway_listener_url: str | None = None,
) -> None:
    """Validate and write a gateway's config file, 0600 (it names the gateway's key and password file)."""
    document = agent_config_document(
        store_id=store_id,
        gateway_id=gateway_id,
        broker_host=broker_host,
        broker_port=broker_port,
        username=username,
        outbox=outbox,
        files=files,
        gateway_listener_url=gateway_listener_url,
    )
    write_private(path, tomli_w.dumps(document))


def tls_problems(mqtt: MqttSettings) -> list[str]:
    """What is wrong with the broker password file and TLS files of ``mqtt``, one sentence each (none: usable).

    Paths must be absolute or relative to the working directory (``load_agent_config`` resolves them).
    """
    problems: list[str] = []
    if mqtt.password_file is not None:
        try:
            read_secret_file(mqtt.password_file, what="broker password file")
        except SecretFileError as err:
            problems.append(f"mqtt.password_file: {err}")
    files = {"ca_file": mqtt.ca_file, "cert_file": mqtt.cert_file, "key_file": mqtt.key_file}
    given = [f"mqtt.{key}" for key, path in files.items() if path is not None]
    if not mqtt.tls:
        if given:
            problems.append(f"mqtt.tls is false, so {', '.join(given)} would not be used: set tls = true")
        return problems
    missing = [f"mqtt.{key}: {path} not found" for key, path in files.items() if path and not path.is_file()]
    if missing:
        return problems + missing
    cert, key, ca = mqtt.cert_file, mqtt.key_file, mqtt.ca_file
    if (cert is None) != (key is None):
        problems.append(
            "mqtt.cert_file and mqtt.key_file go together: the broker knows the gateway by its certificate, "
            "and the certificate is no use without its key"
        )
    if ca is not None:
        try:
            ssl.create_default_context(cafile=str(ca))
        except ssl.SSLError as err:
            problems.append(f"mqtt.ca_file: {ca} holds no usable CA certificate ({err.reason or err})")
            ca = None
    if key is not None:
        try:
            require_private_file(key, what="TLS private key")
        except SecretFileError as err:
            problems.append(f"mqtt.key_file: {err}")
            return problems
    if cert is not None and key is not None:
        problems.extend(_pair_problems(cert, key, ca))
    return problems


def _pair_problems(cert: Path, key: Path, ca: Path | None) -> list[str]:
    """Whether ``key`` is ``cert``'s key, and whether ``ca`` signed ``cert`` for a client."""
    identity = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        identity.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as err:
        if err.reason == "KEY_VALUES_MISMATCH":
            return [f"mqtt.cert_file and mqtt.key_file do not belong together: {key} is not the key of {cert}"]
        return [f"mqtt.cert_file, mqtt.key_file: {cert} and {key} cannot be used ({err.reason or err})"]
    if ca is None:
        return []
    reason = _verified_as_client(cert, key, ca)
    if reason is None:
        return []
    return [f"mqtt.cert_file: {cert} is not accepted by the CA in {ca} ({reason}); the broker would refuse it"]


def _verified_as_client(cert: Path, key: Path, ca: Path) -> str | None:
    """Verify ``cert`` against ``ca`` as the broker would, in a TLS handshake in memory; None if accepted.

    A handshake rather than a signature check: OpenSSL then also checks the validity dates and
    that the certificate may be used by a client, as the broker's does.
    """
    # The "broker" presents the same certificate, which its peer does not check: only the gateway's is at stake.
    broker = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    broker.load_cert_chain(str(cert), str(key))
    broker.verify_mode = ssl.CERT_REQUIRED
    broker.load_verify_locations(cafile=str(ca))
    gateway = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    gateway.check_hostname = False
    gateway.verify_mode = ssl.CERT_NONE
    gateway.load_cert_chain(str(cert), str(key))
    to_broker, to_gateway = ssl.MemoryBIO(), ssl.MemoryBIO()
    broker_side = broker.wrap_bio(to_broker, to_gateway, server_side=True)
    gateway_side = gateway.wrap_bio(to_gateway, to_broker, server_side=False)
    done = {"broker": False, "gateway": False}
    for _ in range(_HANDSHAKE_ROUNDS):
        for name, side in (("gateway", gateway_side), ("broker", broker_side)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except ssl.SSLCertVerificationError as err:
                return str(err.verify_message)
            except ssl.SSLError as err:
                return str(err.reason or err)
        if all(done.values()):  # the broker's side finishes only after it has checked the gateway's certificate
            return None
    return "the handshake did not finish"
