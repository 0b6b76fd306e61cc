"""MQTT connection shared by the hub and the agent: paho-mqtt 2.x bridged to asyncio.

paho runs its own network thread (``loop_start``), which also reconnects with
exponential backoff. Callbacks from that thread are handed to the asyncio loop
with ``call_soon_threadsafe``. Incoming messages go into a bounded inbox that the
network thread appends to without waiting for the loop (one wake-up per burst, not a
task per message: at a hub's thousands of messages a second the hand-over was a tenth
of its CPU). When the inbox is full the network thread waits, so a slow consumer pushes
back on the broker instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from storegate.reachability import UnreachableWarnings, describe_connect_error
from storegate.secret_files import read_secret_file, require_private_file

# publish() return codes under which paho holds a QoS 1 message: sent, or kept until it reconnects.
QUEUED_RCS: Final = (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN)
# The publish() return code under which paho has taken a QoS 0 message (without a connection it drops it).
TAKEN_RC: Final = paho.MQTT_ERR_SUCCESS

log = structlog.get_logger(__name__)


class MqttSettings(BaseModel):
    """How to reach the broker."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = Field(
        default=None, description="inline broker password; prefer password_file or the environment"
    )
    password_file: Path | None = Field(
        default=None, description="file holding the broker password (mode 0600), read when connecting"
    )
    protocol: Literal["5", "3.1.1"] = Field(
        default="5", description="MQTT version; 5 is needed for shared subscriptions when the hub scales out"
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    reconnect_min_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        return self

    @property
    def address(self) -> str:
        """host:port, for messages to people."""
        return f"{self.host}:{self.port}"

    def broker_password(self) -> SecretStr | None:
        """The password, inline or read from ``password_file`` (SecretFileError if that file is not private)."""
        if self.password_file is not None:
            return read_secret_file(self.password_file, what="broker password file")
        return self.password

    def check_secret_files(self) -> None:
        """Raise SecretFileError if the password file or the TLS key is missing, empty or readable by others."""
        if self.password_file is not None:
            read_secret_file(self.password_file, what="broker password file")
        if self.tls and self.key_file is not None:
            require_private_file(self.key_file, what="TLS private key")


def describe_connect_failure(host: str, port: int, err: BaseException | None) -> str:
    """Why a connection to the broker at ``host:port`` failed, naming the address, for the status a technician reads.

    (The warning in the log says it as :func:`storegate.reachability.describe_connect_error` does, with the fix.)
    """
    address = f"{host}:{port}"
    if isinstance(err, socket.gaierror):
        return f"the host name {host!r} cannot be found ({err.strerror or err})"
    if isinstance(err, ConnectionRefusedError):
        return f"nothing listens on {address} (connection refused)"
    if isinstance(err, TimeoutError):
        return f"no answer from {address} (timed out: a firewall, or the wrong address)"
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"the broker's TLS certificate at {address} is not accepted: {err.verify_message}"
    if isinstance(err, ssl.SSLError):
        return f"the TLS handshake with {address} failed: {err.reason or err}"
    if isinstance(err, OSError):
        return f"cannot connect to {address}: {err.strerror or err}"
    return f"cannot connect to {address}" + ("" if err is None else f": {err}")


@dataclass(frozen=True, slots=True)
class Will:
    """The last-will message the broker publishes when the connection is lost."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class Incoming:
    """One received MQTT message."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttLink:
    """An MQTT connection usable from asyncio. Async context manager; not re-entrant.

    ``on_connect`` runs on the event loop after every (re)connection, after the
    subscriptions have been renewed. ``persistent_session`` asks the broker to keep
    the subscriptions and queued QoS 1 messages while this client is away.
    """

    def __init__(
        self,
        *,
        settings: MqttSettings,
        client_id: str,
        subscriptions: list[tuple[str, int]] | None = None,
        will: Will | None = None,
        persistent_session: bool = False,
        session_expiry_s: int = 7 * 24 * 3600,
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        queue_size: int = 10_000,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self._subscriptions = list(subscriptions or [])
        self._will = will
        self._persistent = persistent_session
        self._session_expiry_s = session_expiry_s
        self._on_connect_cb = on_connect
        self._on_disconnect_cb = on_disconnect
        # The inbox: appended by paho's thread, taken on the loop. ``_room`` counts its free places (the
        # backpressure); ``_arrived`` wakes the consumer, set once per burst through ``_wake_pending``.
        self._inbox: deque[Incoming] = deque()
        self._room = threading.Semaphore(queue_size)
        self._arrived = asyncio.Event()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = threading.Event()
        self._closing = False
        self.connects_total = 0
        self.last_error: str | None = None
        # Touched by paho's network thread only: when to warn that the broker cannot be reached.
        self._unreachable = UnreachableWarnings()
        self._refused = False  # the broker refused the last CONNECT: paho's disconnect after it is no news
        self._tls_context: ssl.SSLContext | None = None
        self._client = self._make_client()

    # ------------------------------------------------------------------ lifecycle

    def _make_client(self) -> paho.Client:
        s = self.settings
        v5 = s.protocol == "5"
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            # MQTT 3.1.1 only: v5 sets clean_start at connect time instead.
            clean_session=None if v5 else not self._persistent,
        )
        if s.username is not None:
            password = s.broker_password()
            client.username_pw_set(s.username, password.get_secret_value() if password else None)
        if s.tls:
            if s.key_file is not None:
                require_private_file(s.key_file, what="TLS private key")
            context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
            if s.cert_file:
                context.load_cert_chain(str(s.cert_file), str(s.key_file) if s.key_file else None)
            client.tls_set_context(context)
            self._tls_context = context
        if self._will is not None:
            client.will_set(self._will.topic, self._will.payload, qos=self._will.qos, retain=self._will.retain)
        client.reconnect_delay_set(min_delay=max(1, int(s.reconnect_min_s)), max_delay=int(s.reconnect_max_s))
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        # Outgoing QoS 1 messages the broker has not PUBACKed yet; more wait in paho's queue.
        client.max_inflight_messages_set(1000)
        return client

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._closing = False
        s = self.settings
        kwargs: dict[str, object] = {}
        if s.protocol == "5":
            kwargs["clean_start"] = not self._persistent
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self._session_expiry_s if self._persistent else 0
            kwargs["properties"] = props
        # connect_async never raises for an unreachable broker: the network thread keeps trying.
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive_s, **kwargs)  # type: ignore[arg-type]
        self._client.loop_start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self, *, final_message: tuple[str, bytes, int, bool] | None = None) -> None:
        """Publish an optional last message, disconnect cleanly and stop the network thread."""
        if self._closing:
            return
        self._closing = True
        try:
            if final_message is not None and self.connected:
                info = self._client.publish(*final_message)
                await asyncio.to_thread(info.wait_for_publish, 2.0)
        except (RuntimeError, ValueError) as err:  # the connection dropped at that moment
            log.warning("mqtt_final_message_not_sent", broker=self.settings.address, error=str(err))
        finally:
            self._client.disconnect()
            await asyncio.to_thread(self._client.loop_stop)

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the connection and it has not dropped since."""
        return self._connected.is_set()

    @property
    def queue_depth(self) -> int:
        """Messages received from the broker and not yet taken by the consumer."""
        return len(self._inbox)

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until connected, up to ``timeout`` seconds."""
        return await asyncio.to_thread(self._connected.wait, timeout)

    def reload_client_certificate(self) -> None:
        """Take the certificate and key files anew (renewed) and reconnect with them.

        The SSL context paho holds is given the new pair (OpenSSL replaces it for every new connection), then the
        connection's socket is shut: paho's network thread sees the connection lost and reconnects as after any
        drop, with the new certificate. Messages paho held are sent again and the agent's outbox resends what the
        hub has not acknowledged, so nothing is lost; the hub stores each event once whatever arrives twice.
        """
        s = self.settings
        if self._tls_context is None or s.cert_file is None:
            raise RuntimeError("this link has no client certificate to reload")
        if s.key_file is not None:
            require_private_file(s.key_file, what="TLS private key")
        self._tls_context.load_cert_chain(str(s.cert_file), str(s.key_file) if s.key_file else None)
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):  # closed meanwhile: paho reconnects anyway
                sock.shutdown(socket.SHUT_RDWR)
        log.info("mqtt_client_certificate_reloaded", broker=s.address, cert_file=str(s.cert_file))

    # ------------------------------------------------------------------ I/O

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo:
        """Queue a message for sending; paho keeps QoS>0 messages and retries them while reconnecting."""
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    async def messages(self) -> AsyncIterator[Incoming]:
        """Incoming messages of the subscriptions, forever."""
        while True:
            incoming = self.get_nowait()
            if incoming is not None:
                yield incoming
                continue
            self._arrived.clear()
            if not self._inbox:  # checked again after the clear: an append in between has scheduled a wake
                await self._arrived.wait()

    def get_nowait(self) -> Incoming | None:
        """One waiting message, or None."""
        try:
            incoming = self._inbox.popleft()
        except IndexError:
            return None
        self._room.release()
        return incoming

    def _wake(self) -> None:
        # The flag goes down before the event is set: an append after this line schedules its own wake.
        self._wake_pending = False
        self._arrived.set()

    # ------------------------------------------------------------------ paho thread callbacks

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker {self.settings.address} refused the connection: {reason_code}"
            self._refused = True
            self._note_failure(str(reason_code), event="mqtt_refused")  # e.g. "Not authorized"
            return
        sock = client.socket()
        if isinstance(sock, socket.socket):  # also ssl.SSLSocket; None or a websocket wrapper otherwise
            # paho leaves Nagle's algorithm on: a small publish could then wait for the broker's
            # delayed ACK (up to 40 ms on Linux) before it leaves. Events and acks are latency-bound.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for topic_filter, qos in self._subscriptions:
            client.subscribe(topic_filter, qos)
        self.connects_total += 1
        self.last_error = None
        self._refused = False
        self._connected.set()
        outage = self._unreachable.reached(time.monotonic())
        if outage is not None:
            log.info(
                "mqtt_broker_reachable",
                broker=self.settings.address,
                unreachable_for_s=round(outage.failing_for_s, 1),
                failed_attempts=outage.attempts,
            )
        log.info(
            "mqtt_connected",
            broker=self.settings.address,
            client_id=self.client_id,
            session_present=flags.session_present,
        )
        if self._on_connect_cb is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_connect_cb)

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._closing:
            return
        self.last_error = f"connection to broker {self.settings.address} lost: {reason_code}"
        if was_connected:  # the start of an outage; failed retries after it go through _handle_connect_fail
            self._note_failure(str(reason_code), event="mqtt_disconnected")
        elif self._refused:  # paho closing after a refusal _handle_connect has noted
            self._refused = False
        else:
            # The TCP connection was made but closed before any CONNACK: plain MQTT spoken to a TLS port, or no
            # broker at that port at all.
            reason = f"the connection closed before the broker answered ({reason_code}): check the port and tls"
            self.last_error = f"broker {self.settings.address} unreachable: {reason}"
            self._note_failure(reason)
        if self._on_disconnect_cb is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_disconnect_cb, str(reason_code))

    def _handle_connect_fail(self, client: paho.Client, userdata: object) -> None:
        # paho calls this from inside its ``except OSError`` around the connection attempt and passes no error:
        # the exception being handled is the reason (refused, unresolvable name, TLS, timeout).
        err = sys.exception()
        error = describe_connect_failure(self.settings.host, self.settings.port, err)
        repeated = error == self.last_error
        self.last_error = error
        self._note_failure(describe_connect_error(err))  # the log: the first failure, then with backoff
        if repeated:
            return  # the same failure on every retry: reported to the agent's status once
        if self._on_disconnect_cb is not None and self._loop is not None and not self._closing:
            self._loop.call_soon_threadsafe(self._on_disconnect_cb, error)

    def _note_failure(self, reason: str, *, event: str = "mqtt_broker_unreachable") -> None:
        """A failed attempt or a lost connection: a warning for the first of an outage, then with backoff."""
        if self._closing:
            return
        outage = self._unreachable.failed(time.monotonic())
        if outage is not None:
            log.warning(
                event,
                broker=self.settings.address,
                reason=reason,
                failing_for_s=round(outage.failing_for_s, 1),
                failed_attempts=outage.attempts,
            )

    def _handle_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        incoming = Incoming(message.topic, bytes(message.payload), message.qos, bool(message.retain))
        # Blocks this network thread while the inbox is full: backpressure instead of unbounded RAM.
        while not self._room.acquire(timeout=1.0):
            if self._closing or loop.is_closed():
                return  # shutting down: the broker redelivers it, or the agent resends it
        self._inbox.append(incoming)
        if not self._wake_pending:
            self._wake_pending = True
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop closed meanwhile
                return
