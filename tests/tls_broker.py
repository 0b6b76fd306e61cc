"""A real Mosquitto running the configuration the hub writes (TLS, client certificates, ACL, CRL), and a
plain paho client that reports what the broker let it do. Shared by the PKI tests and the agent's TLS test."""

from __future__ import annotations

import contextlib
import getpass
import signal
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.pki.authority import CertificateAuthority
from hub.pki.broker import BrokerFiles, write_broker_files
from hub.pki.identity import GatewayIdentity
from hub.pki.settings import DEFAULT_BROKER_HOSTS
from launcher.broker import LocalBroker, find_mosquitto, free_port, start_mosquitto_with
from storegate.mqtt import MqttSettings
from tests.conftest import wait_until

HOST = "127.0.0.1"
STORE_A = GatewayIdentity("store-a", "gw-1")
STORE_B = GatewayIdentity("store-b", "gw-1")


@dataclass
class TlsBroker:
    """The hub's CA, the files it wrote for the broker, and the Mosquitto running them."""

    ca: CertificateAuthority
    files: BrokerFiles
    broker: LocalBroker
    workdir: Path
    bundles: dict[GatewayIdentity, Path] = field(default_factory=dict)

    @property
    def port(self) -> int:
        """The TLS listener's port."""
        return self.broker.port

    def issue(self, gateway: GatewayIdentity) -> Path:
        """Issue ``gateway`` a certificate (gateway.crt, gateway.key, ca.crt in the returned directory)."""
        directory = self.workdir / "gateways" / gateway.store_id / gateway.gateway_id
        self.ca.issue_gateway(gateway).write(directory, stem="gateway")
        self.bundles[gateway] = directory
        return directory

    def rewrite(self) -> None:
        """Write the broker's files again from the CA's index, as the hub does after a change."""
        write_broker_files(self.ca, self.files.directory, port=self.port, bind_address=HOST, run_as=getpass.getuser())

    def reload(self) -> None:
        """SIGHUP, as a broker reload does."""
        self.broker.process.send_signal(signal.SIGHUP)

    def gateway_settings(self, gateway: GatewayIdentity) -> MqttSettings:
        """How ``gateway`` reaches the broker with its own certificate."""
        directory = self.bundles[gateway]
        return self._settings(directory / "ca.crt", directory / "gateway.crt", directory / "gateway.key")

    def hub_settings(self) -> MqttSettings:
        """How the hub reaches the broker with its own certificate."""
        return self._settings(self.ca.ca_cert_path, self.ca.hub_cert_path, self.ca.hub_key_path)

    def _settings(self, ca: Path, cert: Path | None, key: Path | None) -> MqttSettings:
        return MqttSettings(
            host=HOST,
            port=self.port,
            tls=True,
            ca_file=ca,
            cert_file=cert,
            key_file=key,
            reconnect_min_s=0.2,
            reconnect_max_s=1.0,
        )


def start_tls_broker(
    workdir: Path,
    gateways: tuple[GatewayIdentity, ...] = (STORE_A, STORE_B),
    broker_hosts: tuple[str, ...] = DEFAULT_BROKER_HOSTS,
) -> TlsBroker:
    """A CA with ``gateways`` issued, its broker files written, and Mosquitto started on them.

    ``broker_hosts``: the names the broker's certificate holds (fewer, to test a name it does not hold).
    """
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: apt-get install mosquitto")
    ca = CertificateAuthority.create(workdir / "secrets" / "pki", broker_hosts=broker_hosts)
    port = free_port(HOST)
    bundles = {}
    for gateway in gateways:
        bundles[gateway] = directory = workdir / "gateways" / gateway.store_id / gateway.gateway_id
        ca.issue_gateway(gateway).write(directory, stem="gateway")
    # Every gateway is issued before the broker starts: a SIGHUP is handled whenever the broker gets to it, so a
    # reload sent here could land after a test's own change and apply it early.
    # As root Mosquitto changes to the `mosquitto` user, which may not read the 0600 files: run as us.
    files = write_broker_files(ca, workdir / "broker", port=port, bind_address=HOST, run_as=getpass.getuser())
    broker = start_mosquitto_with(files.conf, host=HOST, port=port)
    tls = TlsBroker(ca=ca, files=files, broker=broker, workdir=workdir)
    tls.bundles.update(bundles)
    return tls


@contextlib.contextmanager
def running_tls_broker(
    workdir: Path,
    gateways: tuple[GatewayIdentity, ...] = (STORE_A, STORE_B),
    broker_hosts: tuple[str, ...] = DEFAULT_BROKER_HOSTS,
) -> Iterator[TlsBroker]:
    """:func:`start_tls_broker` for a block; the broker is killed after it."""
    tls = start_tls_broker(workdir, gateways, broker_hosts)
    try:
        yield tls
    finally:
        tls.broker.stop(kill=True)


class Client:
    """A paho client with a certificate (or none) that records what the broker did with it.

    Use as a context manager: entering connects and waits until the broker has accepted or refused.
    """

    def __init__(self, settings: MqttSettings, *, client_id: str = "probe", tls: bool = True) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._messages: list[tuple[str, bytes, bool]] = []
        self.accepted = threading.Event()
        self.ended = threading.Event()  # refused, or the connection dropped
        self.subacks: list[list[int]] = []
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        if tls:
            context = ssl.create_default_context(cafile=str(settings.ca_file))
            if settings.cert_file is not None:
                context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
            self._client.tls_set_context(context)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    def __enter__(self) -> Client:
        try:
            self._client.connect(self.settings.host, self.settings.port)
        except (OSError, ssl.SSLError):
            self.ended.set()
            return self
        self._client.loop_start()
        wait_until(lambda: self.accepted.is_set() or self.ended.is_set(), what="the broker's answer to CONNECT")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        """Accepted by the broker and not dropped since."""
        return self.accepted.is_set() and not self.ended.is_set()

    def subscribe(self, *filters: str) -> list[int]:
        """Subscribe at QoS 1 and wait for the SUBACK; the reason codes it returned."""
        before = len(self.subacks)
        for topic_filter in filters:
            self._client.subscribe(topic_filter, 1)
        wait_until(lambda: len(self.subacks) >= before + len(filters), what=f"SUBACK for {filters}")
        return [code for codes in self.subacks[before:] for code in codes]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait until the broker has answered (PUBACK), whatever it did with it."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)

    def publish_nowait(self, topic: str, payload: bytes) -> None:
        """Hand a QoS 1 message to paho without waiting for the broker."""
        self._client.publish(topic, payload, qos=1)

    def messages(self, topic: str | None = None) -> list[bytes]:
        """Payloads received so far, on ``topic`` or on any."""
        with self._lock:
            return [payload for t, payload, _ in self._messages if topic is None or t == topic]

    def wait_for(self, topic: str, payload: bytes) -> None:
        """Wait until ``payload`` has arrived on ``topic``."""
        wait_until(lambda: payload in self.messages(topic), what=f"{payload!r} on {topic}")

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        if getattr(rc, "is_failure", False):
            self.ended.set()
        else:
            self.accepted.set()

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        self.ended.set()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self._messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, codes: object, props: object) -> None:
        self.subacks.append([int(getattr(code, "value", code)) for code in codes])  # type: ignore[attr-defined]
