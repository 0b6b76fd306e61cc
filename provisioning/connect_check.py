"""``storegate provision check --connect``: can this gateway reach the hub? Step by step, each failure with its fix.

The agent itself only says "unreachable" and retries; the technician on site needs to know which link of the chain
is broken. The steps, stopping at the first that fails:

1. **files**: the TLS and password files the config names are usable (:func:`provisioning.agent_config.tls_problems`:
   the key private, the certificate the key's, signed by the CA, in date);
2. **dns**: ``mqtt.host`` resolves;
3. **tcp**: something listens on ``mqtt.host:mqtt.port``;
4. **tls**: the broker's certificate chains to ``mqtt.ca_file``, is valid for ``mqtt.host`` and in date;
5. **mqtt**: the broker accepts the gateway (its certificate, or user name and password) in a CONNECT;
6. **publish**: the broker's ACL lets the gateway publish on its events topic (MQTT 5 answers a refused publish);
7. **hub ack**: the hub stores the check event and acknowledges it.

The check event is a real event (:data:`CHECK_KIND`, ``gateway.check``) on a stream of its own (a fresh UUID, seq 1),
so it goes through the hub's real path and is acknowledged like any other; no part of the hub reads the kind, so
stock, sales and alerts are untouched, and the event stays in the hub's event log as a record that the check ran.

The check uses the gateway's own identity, so its session is the agent's (the broker names the client by the
certificate). It therefore refuses to run while the agent runs, resumes the agent's session rather than wiping it,
and acknowledges nothing but its own ack: whatever else the broker held for the agent is delivered to it again.
"""

from __future__ import annotations

import socket
import ssl
import threading
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Final

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict

from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.status import running_agent_pid
from provisioning.agent_config import tls_problems
from storegate import wire
from storegate.configfile import ConfigError
from storegate.mqtt import MqttSettings
from storegate.process import EXIT_CONFIG

log = structlog.get_logger(__name__)

# The kind of the check event: a dotted name no part of the hub acts on (the wire lets any through).
CHECK_KIND: Final = "gateway.check"
# The broker's ports as the hub's configuration writes them (docs/security.md).
TLS_PORT: Final = 8883
PLAIN_PORT: Final = 1883
# Session expiry of the agent's persistent session, kept as the agent asks for it (storegate.mqtt.MqttLink).
_AGENT_SESSION_EXPIRY_S: Final = 7 * 24 * 3600
# A broker certificate expiring within this many days is said to be expiring.
_EXPIRY_WARNING_DAYS: Final = 30
# Verification codes of OpenSSL (X509_V_ERR_*) the check explains.
_EXPIRED: Final = 10
_NAME_MISMATCH: Final = frozenset({62, 64})  # a host name, or an IP address, the certificate does not hold
_UNTRUSTED: Final = frozenset({2, 18, 19, 20, 21})
# How often the check event is sent again while the hub has not acknowledged it.
_RESEND_S: Final = 2.0
# How often a wait looks whether the connection ended meanwhile.
_POLL_S: Final = 0.05


class Step(StrEnum):
    """The steps, in order."""

    FILES = "files"
    DNS = "dns"
    TCP = "tcp"
    TLS = "tls"
    MQTT = "mqtt"
    PUBLISH = "publish"
    HUB_ACK = "hub ack"


class StepResult(BaseModel):
    """One step: passed or not, what was found, and the fix when it failed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: Step
    ok: bool
    detail: str
    fix: str | None = None


class ConnectReport(BaseModel):
    """Every step run, up to the first failure."""

    model_config = ConfigDict(extra="forbid")

    broker: str
    steps: list[StepResult]

    @property
    def ok(self) -> bool:
        """Whether every step passed (and all were run)."""
        return len(self.steps) == len(Step) and all(step.ok for step in self.steps)


class _Failed(Exception):
    def __init__(self, result: StepResult) -> None:
        super().__init__(result.detail)
        self.result = result


def _fail(step: Step, detail: str, fix: str) -> _Failed:
    return _Failed(StepResult(step=step, ok=False, detail=detail, fix=fix))


def check_connection(config: AgentConfig, *, timeout_s: float = 10.0) -> ConnectReport:
    """Run the steps against the broker and hub of ``config`` (loaded: paths resolved); stops at the first failure."""
    mqtt = config.mqtt
    report = ConnectReport(broker=mqtt.address, steps=[])
    try:
        report.steps.append(_files(mqtt))
        report.steps.append(_dns(mqtt))
        report.steps.append(_tcp(mqtt, timeout_s))
        report.steps.append(_tls(mqtt, timeout_s))
        _mqtt_publish_and_ack(config, timeout_s, report.steps)
    except _Failed as failed:
        report.steps.append(failed.result)
    return report


def _files(mqtt: MqttSettings) -> StepResult:
    problems = tls_problems(mqtt)
    if problems:
        raise _fail(Step.FILES, "; ".join(problems), "fix the files the config names (storegate provision check)")
    used = [name for name, path in (("CA", mqtt.ca_file), ("certificate", mqtt.cert_file)) if path is not None]
    return StepResult(step=Step.FILES, ok=True, detail="usable: " + (", ".join(used) if used else "no TLS files"))


def _dns(mqtt: MqttSettings) -> StepResult:
    try:
        found = socket.getaddrinfo(mqtt.host, mqtt.port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise _fail(
            Step.DNS,
            f"the host name {mqtt.host!r} cannot be found ({err.strerror or err})",
            "check mqtt.host (the hub's broker address, as enrolment wrote it) and the gateway's network and DNS",
        ) from err
    addresses = sorted({str(info[4][0]) for info in found})
    return StepResult(step=Step.DNS, ok=True, detail=f"{mqtt.host} is {', '.join(addresses)}")


def _port_fix(mqtt: MqttSettings) -> str:
    if mqtt.tls:
        return f"is the port right? the hub's broker listens on {TLS_PORT} (TLS) by default"
    return (
        f"is the port right? the hub's broker listens on {TLS_PORT} with TLS by default "
        f"(set mqtt.tls = true and mqtt.ca_file), or {PLAIN_PORT} without"
    )


def _tcp(mqtt: MqttSettings, timeout_s: float) -> StepResult:
    try:
        with socket.create_connection((mqtt.host, mqtt.port), timeout=timeout_s):
            pass
    except ConnectionRefusedError as err:
        raise _fail(Step.TCP, f"nothing listens on {mqtt.address} (connection refused)", _port_fix(mqtt)) from err
    except TimeoutError as err:
        raise _fail(
            Step.TCP,
            f"no answer from {mqtt.address} within {timeout_s:.0f} s",
            "a firewall between the store and the hub drops it, or the address is wrong",
        ) from err
    except OSError as err:
        raise _fail(
            Step.TCP, f"cannot connect to {mqtt.address}: {err.strerror or err}", "check the gateway's network"
        ) from err
    return StepResult(step=Step.TCP, ok=True, detail=f"{mqtt.address} accepts connections")


def tls_context(mqtt: MqttSettings) -> ssl.SSLContext:
    """The TLS context the agent's link uses (storegate.mqtt.MqttLink): the config's CA, and its certificate."""
    context = ssl.create_default_context(cafile=str(mqtt.ca_file) if mqtt.ca_file else None)
    if mqtt.cert_file:
        context.load_cert_chain(str(mqtt.cert_file), str(mqtt.key_file) if mqtt.key_file else None)
    return context


def _tls(mqtt: MqttSettings, timeout_s: float) -> StepResult:
    if not mqtt.tls:
        return StepResult(
            step=Step.TLS, ok=True, detail="not used (mqtt.tls = false): the link is not encrypted; fine on a lab bench"
        )
    context = tls_context(mqtt)
    try:
        with (
            socket.create_connection((mqtt.host, mqtt.port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=mqtt.host) as tls,
        ):
            peer = tls.getpeercert() or {}
            version = tls.version()
    except ssl.SSLCertVerificationError as err:
        raise _tls_refused(mqtt, err) from err
    except ssl.SSLError as err:
        raise _fail(
            Step.TLS,
            f"the TLS handshake with {mqtt.address} failed ({err.reason or err})",
            f"is {mqtt.port} the broker's TLS port ({TLS_PORT} by default)? a plain MQTT port does not speak TLS",
        ) from err
    except OSError as err:  # a plain MQTT listener resets a TLS hello
        raise _fail(
            Step.TLS,
            f"the TLS handshake with {mqtt.address} failed ({err.strerror or err})",
            f"is {mqtt.port} the broker's TLS port ({TLS_PORT} by default)? a plain MQTT port does not speak TLS",
        ) from err
    not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(str(peer.get("notAfter"))), tz=UTC)
    days = (not_after - datetime.now(UTC)).days
    soon = f"; it expires in {days} days: renew it on the hub" if days < _EXPIRY_WARNING_DAYS else ""
    return StepResult(
        step=Step.TLS,
        ok=True,
        detail=f"{version}; the broker's certificate is the hub CA's, valid for {mqtt.host} "
        f"until {not_after:%Y-%m-%d}{soon}",
    )


def _tls_refused(mqtt: MqttSettings, err: ssl.SSLCertVerificationError) -> _Failed:
    code, message = err.verify_code, err.verify_message
    if code in _NAME_MISMATCH:
        return _fail(
            Step.TLS,
            f"the broker's certificate is not valid for {mqtt.host!r} ({message})",
            "set mqtt.host to a name the broker's certificate holds, or add this one on the hub: "
            "storegate hub pki renew broker --broker-host NAME",
        )
    if code == _EXPIRED:
        return _fail(
            Step.TLS, "the broker's certificate has expired", "renew it on the hub: storegate hub pki renew broker"
        )
    if code in _UNTRUSTED:
        return _fail(
            Step.TLS,
            f"the broker's certificate is not signed by the CA in {mqtt.ca_file} ({message})",
            "mqtt.ca_file must be the hub's CA certificate (tls/ca.pem from enrolment, or the ca.crt of "
            "storegate hub gateways add --out)",
        )
    return _fail(
        Step.TLS, f"the broker's certificate is not accepted ({message})", "check the hub's broker certificate"
    )


def _mqtt_publish_and_ack(config: AgentConfig, timeout_s: float, results: list[StepResult]) -> None:
    session = _CheckSession(config, timeout_s)
    try:
        results.append(session.connect())
        results.append(session.publish())
        results.append(session.await_ack())
    finally:
        session.close()


class _CheckSession:
    """One MQTT session as the gateway: connect, subscribe to the acks, publish the check batch, await its ack."""

    def __init__(self, config: AgentConfig, timeout_s: float) -> None:
        self.config = config
        self.mqtt = config.mqtt
        self.timeout_s = timeout_s
        self.stream = uuid.uuid4()
        self.ack_topic = wire.topic(config.store_id, config.gateway_id, wire.Channel.ACK)
        self.events_topic = wire.topic(config.store_id, config.gateway_id, wire.Channel.EVENTS)
        self.connack = threading.Event()
        self.connack_code: ReasonCode | None = None
        self.ended: str | None = None
        self.suback = threading.Event()
        self.suback_codes: list[ReasonCode] = []
        self.puback = threading.Event()
        self.puback_code: ReasonCode | None = None
        self.acked = threading.Event()
        self.batch = b""
        v5 = self.mqtt.protocol == "5"
        # The agent's client id: a broker that names clients by certificate gives it anyway (the session is the
        # agent's); manual acks, so that nothing the broker queued for the agent is taken from it.
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"storegate-agent-{config.store_id}-{config.gateway_id}",
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        if self.mqtt.username is not None:
            password = self.mqtt.broker_password()
            self.client.username_pw_set(self.mqtt.username, password.get_secret_value() if password else None)
        if self.mqtt.tls:
            self.client.tls_set_context(tls_context(self.mqtt))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _wait(self, event: threading.Event) -> bool:
        """Wait up to the timeout for ``event``, or until the connection ends; True when the event came."""
        for _ in range(max(1, round(self.timeout_s / _POLL_S))):
            if event.wait(_POLL_S) or self.ended is not None:
                break
        return event.is_set()

    def connect(self) -> StepResult:
        kwargs: dict[str, object] = {}
        if self.mqtt.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = _AGENT_SESSION_EXPIRY_S
            kwargs = {"clean_start": False, "properties": props}
        try:
            self.client.connect(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s, **kwargs)  # type: ignore[arg-type]
        except (OSError, ssl.SSLError) as err:
            raise _fail(Step.MQTT, f"cannot connect: {err}", "run the check again; then look at the broker") from err
        self.client.loop_start()
        if not self._wait(self.connack) or self.connack_code is None:
            raise self._refused_identity(self.ended or f"no answer to CONNECT within {self.timeout_s:.0f} s")
        if self.connack_code.is_failure:
            raise self._refused_identity(str(self.connack_code))
        who = self.mqtt.username or ("its certificate" if self.mqtt.cert_file else "no credentials")
        return StepResult(step=Step.MQTT, ok=True, detail=f"the broker accepts the gateway ({who})")

    def _refused_identity(self, why: str) -> _Failed:
        if self.mqtt.cert_file is not None:
            fix = (
                f"the broker knows gateways by their certificate: is {self.config.store_id}/{self.config.gateway_id} "
                "enrolled at the hub and not revoked (storegate hub gateways list), and is this its certificate?"
            )
        elif self.mqtt.username is not None:
            fix = "check mqtt.username and the password (mqtt.password_file); the hub's operator can reset them"
        else:
            fix = "the broker wants credentials: the gateway's certificate (mqtt.cert_file) or a user name"
        return _fail(Step.MQTT, f"the broker refused the gateway: {why}", fix)

    def publish(self) -> StepResult:
        self.client.subscribe(self.ack_topic, qos=1)
        if not self._wait(self.suback):
            raise _fail(Step.PUBLISH, "no answer to SUBSCRIBE", "run the check again; then look at the broker")
        if any(code.is_failure for code in self.suback_codes):
            raise _fail(
                Step.PUBLISH,
                f"the broker refuses {self.config.store_id}/{self.config.gateway_id} reading its acks on "
                f"{self.ack_topic}",
                f"the broker's ACL does not let this identity act as {self.config.store_id}/"
                f"{self.config.gateway_id}: is the certificate (or user) this gateway's, and are store_id and "
                "gateway_id in the config right?",
            )
        now = wire.utc_now()
        gateway = self.config.gateway_id
        batch = wire.EventBatch(
            store_id=self.config.store_id,
            gateway_id=gateway,
            sent_at=now,
            events=[
                wire.Event(
                    event_id=uuid.uuid4(),
                    store_id=self.config.store_id,
                    gateway_id=gateway,
                    stream=self.stream,
                    seq=1,
                    device_id=gateway,
                    kind=CHECK_KIND,
                    ts=now,
                    payload={"by": "storegate provision check --connect"},
                )
            ],
        )
        self.batch = wire.encode(batch)
        self.client.publish(self.events_topic, self.batch, qos=1)
        if not self._wait(self.puback):
            raise _fail(Step.PUBLISH, "the broker did not confirm the publish", "run the check again")
        if self.puback_code is not None and self.puback_code.is_failure:
            raise _fail(
                Step.PUBLISH,
                f"the broker refused the publish on {self.events_topic}: {self.puback_code}",
                f"the broker's ACL does not let this identity act as {self.config.store_id}/{gateway}: is the "
                "certificate (or user) this gateway's, and are store_id and gateway_id in the config right?",
            )
        return StepResult(step=Step.PUBLISH, ok=True, detail=f"the broker took a check event on {self.events_topic}")

    def await_ack(self) -> StepResult:
        # Sent again now and then, as the agent does: a hub that was starting or restarting missed it (same event
        # id and seq: the hub stores it once).
        every = min(_RESEND_S, self.timeout_s)
        for _ in range(max(1, round(self.timeout_s / every))):
            if self.acked.wait(every) or self.ended is not None:
                break
            self.client.publish(self.events_topic, self.batch, qos=1)
        if not self.acked.is_set():
            raise _fail(
                Step.HUB_ACK,
                f"the hub did not acknowledge the check event within {self.timeout_s:.0f} s",
                "is the hub running and connected to this broker, and is the gateway enrolled "
                f"(storegate hub gateways list shows {self.config.store_id}/{self.config.gateway_id})?",
            )
        return StepResult(step=Step.HUB_ACK, ok=True, detail="the hub stored the check event and acknowledged it")

    # paho's network thread

    def _on_connect(
        self, client: paho.Client, userdata: object, flags: object, code: ReasonCode, props: object
    ) -> None:
        self.connack_code = code
        self.connack.set()

    def _on_disconnect(
        self, client: paho.Client, userdata: object, flags: object, code: ReasonCode, props: object
    ) -> None:
        self.ended = f"the broker closed the connection ({code})"

    def _on_subscribe(
        self, client: paho.Client, userdata: object, mid: int, codes: list[ReasonCode], props: object
    ) -> None:
        self.suback_codes = list(codes)
        self.suback.set()

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, code: ReasonCode, props: object) -> None:
        self.puback_code = code
        self.puback.set()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        if message.topic != self.ack_topic:
            return  # not ours: left unacknowledged, the broker gives it to the agent again
        try:
            ack = wire.decode(wire.Ack, bytes(message.payload))
        except wire.WireError:
            return
        if ack.stream != self.stream:
            return  # an ack for the agent's own stream: the agent's to take
        client.ack(message.mid, message.qos)
        if ack.through_seq >= 1:
            self.acked.set()


def run_connect_check(config_path: Path, *, as_json: bool, timeout_s: float) -> tuple[str, int]:
    """``storegate provision check --connect``: the report and the exit code (0 all passed, 1 a step failed,
    2 the config cannot be used or the agent is running)."""
    try:
        config = load_agent_config(config_path)
    except ConfigError as err:
        return str(err), EXIT_CONFIG
    pid = running_agent_pid(config.outbox.path)
    if pid is not None:
        return (
            f"the agent runs (pid {pid}) with this config: stop it first (systemctl stop storegate-agent); "
            "the check connects as the gateway and would take the agent's place at the broker",
            EXIT_CONFIG,
        )
    report = check_connection(config, timeout_s=timeout_s)
    failed = next((step for step in report.steps if not step.ok), None)
    if failed is None:
        log.info("connect_check_passed", broker=report.broker)
    else:
        log.warning("connect_check_failed", broker=report.broker, step=failed.step.value, detail=failed.detail)
    text = report.model_dump_json(indent=2) if as_json else describe_report(report)
    return text, 0 if report.ok else 1


def describe_report(report: ConnectReport) -> str:
    """The steps for a terminal: one line each, the fix under a failure."""
    lines = [f"checking the way to the hub through {report.broker}:"]
    for result in report.steps:
        lines.append(f"  {'ok  ' if result.ok else 'FAIL'} {result.step.value}: {result.detail}")
        if result.fix:
            lines.append(f"       fix: {result.fix}")
    lines.append("all steps passed" if report.ok else "stopped at the first failure")
    return "\n".join(lines)
