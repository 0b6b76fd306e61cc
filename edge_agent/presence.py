"""Presence: the gateway's retained status on the broker, which the hub's gateway view follows.

- A retained birth status (reason ``birth``) on every connect: agent version, config hash,
  the devices running.
- The same again (reason ``devices``) while connected when the devices running change.
- A retained "lost" last will, which the broker publishes when the connection drops
  without a goodbye.
- A retained "shutdown" status on a clean stop, just before the agent disconnects.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

import structlog

import storegate
from edge_agent.config import config_hash
from storegate import wire
from storegate.mqtt import Will

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig
    from edge_agent.hotplug import DeviceManager
    from edge_agent.state import AgentState
    from storegate.clock import Clock
    from storegate.mqtt import MqttLink

log = structlog.get_logger(__name__)

# How long a clean shutdown waits for the broker to take the shutdown status.
SHUTDOWN_STATUS_TIMEOUT_S: Final = 2.0
# Devices a status lists at most.
STATUS_DEVICES_MAX: Final = 256


class Presence:
    """The gateway's presence on the broker, and ``state.connected``/``connects``/``disconnected_at``.

    The agent calls :meth:`connected` from the link's on_connect, :meth:`disconnected` from its
    on_disconnect, and :meth:`shutdown` to say goodbye; the device manager calls
    :meth:`devices_changed`. Each connect and disconnect sets ``state.wake_health``.
    """

    def __init__(self, *, config: AgentConfig, clock: Clock, state: AgentState, devices: DeviceManager) -> None:
        self._store_id = config.store_id
        self._gateway_id = config.gateway_id
        self._config_hash = config_hash(config)
        self._clock = clock
        self._state = state
        self._devices = devices
        self.topic = wire.topic(config.store_id, config.gateway_id, wire.Channel.STATUS)
        self._link: MqttLink | None = None  # the link of the last connect
        self._status_devices: list[str] = []  # as the last retained status published listed them

    def status(self, *, online: bool, reason: wire.StatusReason) -> wire.GatewayStatus:
        """The gateway's status as of now; an online one lists the devices running."""
        return wire.GatewayStatus(
            store_id=self._store_id,
            gateway_id=self._gateway_id,
            online=online,
            reason=reason,
            ts=self._clock.now(),
            agent_version=storegate.__version__,
            config_hash=self._config_hash,
            devices=self._devices.device_ids[:STATUS_DEVICES_MAX] if online else [],
        )

    def will(self) -> Will:
        """The last will for the link: offline, reason "lost", stamped now (the broker publishes it unchanged)."""
        return Will(self.topic, wire.encode(self.status(online=False, reason="lost")))

    def connected(self, link: MqttLink) -> None:
        """The link (re)connected: publish the birth on it."""
        state = self._state
        state.connects += 1
        state.connected = True
        state.disconnected_at = None
        self._link = link
        self._publish("birth")
        state.wake_health.set()

    def disconnected(self, reason: str) -> None:
        """The link dropped, or a connection attempt failed for a new reason (``reason`` in words)."""
        state = self._state
        state.connected = False
        if state.disconnected_at is None:
            state.disconnected_at = self._clock.monotonic()
        # At once, not at the next interval: `storegate agent status` should say why without waiting.
        state.wake_health.set()

    def devices_changed(self) -> None:
        """A device started or stopped: while connected, the retained status says so (the hub's gateway view)."""
        if self._state.connected and self._devices.device_ids[:STATUS_DEVICES_MAX] != self._status_devices:
            self._publish("devices")

    def _publish(self, reason: wire.StatusReason) -> None:
        link = self._link
        if link is None:
            return
        status = self.status(online=True, reason=reason)
        link.publish(self.topic, wire.encode(status), qos=1, retain=True)
        self._status_devices = status.devices

    async def shutdown(self, link: MqttLink) -> None:
        """Say goodbye: the retained "shutdown" status, if connected, then close the link."""
        # Published here rather than through close(final_message=...), so that a failed
        # publish still lets the link disconnect and stop its network thread.
        if link.connected:
            try:
                info = link.publish(
                    self.topic, wire.encode(self.status(online=False, reason="shutdown")), qos=1, retain=True
                )
                await asyncio.to_thread(info.wait_for_publish, SHUTDOWN_STATUS_TIMEOUT_S)
            except (RuntimeError, ValueError) as err:
                log.warning("shutdown_status_not_sent", error=str(err))
        await link.close()
        self._state.connected = False
