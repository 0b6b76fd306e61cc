"""How the agent reports on itself: counters, rates, problems in words, and the Prometheus endpoint.

:class:`HealthReporter` publishes a retained health message and writes the status file
every ``health.interval_s``, and at once when something changes (a connect, a disconnect,
outbox writes failing or recovering, an eviction episode); :class:`MetricsServer` serves
Prometheus ``/metrics`` on request.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server

from edge_agent.acks import RefusedAck
from edge_agent.status import AgentStatusFile, DeviceState, clock_time
from storegate import wire
from storegate.service_metrics import register_service_metrics
from storegate.tasks import wait_for_event

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig
    from edge_agent.hotplug import DeviceManager
    from edge_agent.recorder import Recorder
    from edge_agent.state import AgentState
    from edge_agent.status import StatusFile
    from storegate.clock import Clock
    from storegate.mqtt import MqttLink

log = structlog.get_logger(__name__)

# Rates are sampled this often (they are averaged over a minute).
RATE_SAMPLE_S: Final = 1.0
_PRIORITY_NAMES: Final = tuple(priority.name.lower() for priority in wire.Priority)
_REFUSED_ACKS: Final = tuple(reason.value for reason in RefusedAck)


@dataclass(frozen=True, slots=True)
class AgentStats:
    """A snapshot of the agent's counters and state."""

    depth: int
    published: int
    acked: int
    resent: int
    reconnects: int
    rejected: int
    last_ack_seq: int
    connected: bool
    oldest_unacked_age_s: float | None
    devices_up: tuple[tuple[str, bool], ...] = ()
    size_bytes: int = 0
    duplicates: int = 0
    # Evicted events by priority name (security, sales, device, telemetry), all four always present.
    evicted_by_priority: tuple[tuple[str, int], ...] = ()
    publish_rate: float = 0.0
    ack_rate: float = 0.0
    # Acks refused (nothing deleted) by reason (edge_agent.acks.RefusedAck), every reason always present.
    acks_refused_by_reason: tuple[tuple[str, int], ...] = ()
    # The outbox's filesystem: full since (None when not), writes failing, the WAL's size now.
    disk_full_since: datetime | None = None
    writes_failing: bool = False
    wal_bytes: int = 0

    @property
    def evicted(self) -> int:
        """Events evicted in all, every priority."""
        return sum(count for _, count in self.evicted_by_priority)


RATE_WINDOW_S: Final = 60.0


class RateMeter:
    """Events a second over the last minute, from a running total sampled every second or so.

    Keeps at most one sample a second, so its memory is bounded by the window. ``rate``
    is a plain float, safe to read from the metrics server's thread.
    """

    def __init__(self, *, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()
        self.rate = 0.0

    def sample(self, now: float, total: int) -> float:
        """Record the total at ``now`` and return the rate over the window (or since the first sample)."""
        if not self._samples or now - self._samples[-1][0] >= 1.0:
            self._samples.append((now, total))
        # Keep one sample at or before the window's start, so the rate spans the whole window.
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()
        start, first = self._samples[0]
        self.rate = (total - first) / (now - start) if now > start else 0.0
        return self.rate


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def describe_problems(
    *,
    broker: str,
    connected: bool,
    disconnected_for_s: float | None,
    depth: int,
    ack_stalled_for_s: float | None,
    write_failing: tuple[float, str] | None,
    devices_down: Iterable[tuple[str, float, str | None]],
    devices_attention: Iterable[tuple[str, str]] = (),
    queued: int = 0,
    evicting: tuple[int, str] | None = None,
    disk_full_since: datetime | None = None,
) -> list[str]:
    """What is wrong, in words for the people who read the hub's gateway page; empty when all is well.

    ``queued``: readings held in memory while writes fail. ``evicting``: events evicted since
    the outbox filled up, and the quota in words, while it is full. ``disk_full_since``: when
    the outbox's filesystem filled up, while it is full. ``devices_attention``: devices that work but need a
    person (a printer out of paper, a covered camera), with what, in words.
    """
    problems: list[str] = []
    waiting = _count(depth, "event") + " waiting"
    if not connected:
        since = f" for {disconnected_for_s:.0f} s" if disconnected_for_s is not None else ""
        problems.append(f"broker {broker} unreachable{since}; {waiting}")
    elif ack_stalled_for_s is not None:
        problems.append(f"hub has not acknowledged for {ack_stalled_for_s:.0f} s; {waiting}")
    disk_full = "" if disk_full_since is None else f"disk full since {clock_time(disk_full_since)}"
    if evicting is not None:
        evicted, quota = evicting
        if disk_full:
            problems.append(
                f"outbox {disk_full}: {_count(evicted, 'event')} evicted so far, telemetry first, "
                "each recorded as a loss the hub receives"
            )
        else:
            problems.append(
                f"outbox full ({quota}): {_count(evicted, 'event')} evicted so far, telemetry first; "
                "the hub is told which"
            )
    if write_failing is not None:
        failing_for_s, error = write_failing
        held = f"; {_count(queued, 'reading')} held in memory, devices wait" if queued else ""
        cause = f": {disk_full}" if disk_full else ""
        problems.append(f"outbox writes failing{cause} for {failing_for_s:.0f} s: {error}{held}")
    elif disk_full and evicting is None:
        problems.append(f"outbox {disk_full}: the WAL is checkpointed to make room, nothing evicted so far")
    for device_id, down_for_s, device_error in devices_down:
        reason = f": {device_error}" if device_error else ""
        problems.append(f"device {device_id} down for {down_for_s:.0f} s{reason}")
    problems.extend(f"device {device_id} needs attention: {what}" for device_id, what in devices_attention)
    return problems


_GAUGES: tuple[tuple[str, str, Callable[[AgentStats], float]], ...] = (
    ("storegate_agent_outbox_depth", "Events waiting in the outbox for the hub's acknowledgement.", lambda s: s.depth),
    (
        "storegate_agent_oldest_unacked_age_seconds",
        "Age of the first waiting event; 0 when the outbox is empty.",
        lambda s: s.oldest_unacked_age_s or 0.0,
    ),
    ("storegate_agent_connected", "1 while connected to the broker.", lambda s: int(s.connected)),
    ("storegate_agent_last_ack_seq", "Highest seq the hub has acknowledged.", lambda s: s.last_ack_seq),
    (
        "storegate_agent_outbox_bytes",
        "Bytes of the waiting events, as counted against the quota.",
        lambda s: s.size_bytes,
    ),
    (
        "storegate_agent_publish_rate",
        "Events published a second over the last minute, resends included.",
        lambda s: s.publish_rate,
    ),
    ("storegate_agent_ack_rate", "Events acknowledged a second over the last minute.", lambda s: s.ack_rate),
    (
        "storegate_agent_outbox_disk_full",
        "1 while the outbox's filesystem is full (the outbox checkpoints, evicts and records losses).",
        lambda s: int(s.disk_full_since is not None),
    ),
    (
        "storegate_agent_outbox_writes_failing",
        "1 while readings cannot be written to the outbox at all (they wait in the bounded queue).",
        lambda s: int(s.writes_failing),
    ),
    ("storegate_agent_outbox_wal_bytes", "Size of the outbox's WAL file.", lambda s: s.wal_bytes),
)
# Names without the _total suffix: prometheus-client adds it to counters.
_COUNTERS: tuple[tuple[str, str, Callable[[AgentStats], float]], ...] = (
    ("storegate_agent_published", "Events published to the broker, resends included.", lambda s: s.published),
    ("storegate_agent_acked", "Events the hub acknowledged and the outbox deleted.", lambda s: s.acked),
    ("storegate_agent_resent", "Events published again after a reconnect or an ack timeout.", lambda s: s.resent),
    ("storegate_agent_reconnects", "Connections to the broker after the first.", lambda s: s.reconnects),
    ("storegate_agent_rejected_readings", "Device readings dropped as invalid.", lambda s: s.rejected),
    (
        "storegate_agent_duplicates_dropped",
        "Replayed device readings dropped because the outbox already had their number.",
        lambda s: s.duplicates,
    ),
)


class AgentCollector:
    """Prometheus collector reading an agent's stats snapshot at scrape time (from the server's thread)."""

    def __init__(self, snapshot: Callable[[], AgentStats]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        """The agent's metrics as of now."""
        stats = self._snapshot()
        for name, doc, gauge_value in _GAUGES:
            yield GaugeMetricFamily(name, doc, value=gauge_value(stats))
        for name, doc, counter_value in _COUNTERS:
            yield CounterMetricFamily(name, doc, value=counter_value(stats))
        device_up = GaugeMetricFamily(
            "storegate_agent_device_up", "1 while the device produces readings.", labels=["device_id"]
        )
        for device_id, up in stats.devices_up:
            device_up.add_metric([device_id], int(up))
        yield device_up
        evicted = CounterMetricFamily(
            "storegate_agent_evicted",
            "Events evicted because the outbox quota or the disk was full, by priority.",
            labels=["priority"],
        )
        for priority, count in stats.evicted_by_priority:
            evicted.add_metric([priority], count)
        yield evicted
        refused = CounterMetricFamily(
            "storegate_agent_acks_refused",
            "Acks refused, nothing deleted: invalid, for another gateway or stream, or beyond what was published.",
            labels=["reason"],
        )
        for reason, count in stats.acks_refused_by_reason:
            refused.add_metric([reason], count)
        yield refused


def agent_registry(snapshot: Callable[[], AgentStats]) -> CollectorRegistry:
    """A registry of its own for one agent, so several agents (or tests) in one process do not collide."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(snapshot))
    register_service_metrics(registry, "agent")
    return registry


class MetricsServer:
    """``/metrics`` over HTTP on a daemon thread, between :meth:`start` and :meth:`stop`."""

    def __init__(self, *, registry: CollectorRegistry, host: str, port: int) -> None:
        self._registry = registry
        self._host = host
        self._requested_port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        """The bound port while serving (the one the OS picked when asked for port 0)."""
        return None if self._server is None else int(self._server.server_address[1])

    def start(self) -> int:
        """Bind and serve; returns the port. Raises OSError when the address is taken."""
        if self._server is not None:
            raise RuntimeError("MetricsServer is already serving")
        self._server, self._thread = start_http_server(self._requested_port, addr=self._host, registry=self._registry)
        port = int(self._server.server_address[1])
        log.info("metrics_serving", url=f"http://{self._host}:{port}/metrics")
        return port

    def stop(self) -> None:
        """Stop serving and release the port; blocks up to half a second; idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)


class HealthReporter:
    """The agent's stats and health report, published (retained) on the link and written to the status file.

    Reads ``state``, the ``recorder``'s counters and the ``devices`` (and ``extra_problems``); :meth:`run` reports every
    ``health.interval_s`` and at once when ``state.wake_health`` is set, and samples the rates.
    """

    def __init__(
        self,
        *,
        config: AgentConfig,
        clock: Clock,
        state: AgentState,
        recorder: Recorder,
        devices: DeviceManager,
        status_file: StatusFile,
        extra_problems: Callable[[], list[str]] = list,
    ) -> None:
        self._config = config
        self._extra_problems = extra_problems  # other units' problems in words (the print queue's)
        self._clock = clock
        self._state = state
        self._recorder = recorder
        self._devices = devices
        self._status_file = status_file
        self._topic = wire.topic(config.store_id, config.gateway_id, wire.Channel.HEALTH)
        self._publish_rate = RateMeter()
        self._ack_rate = RateMeter()
        self._problems_logged = False
        self._link: MqttLink | None = None  # the link run() reports on; its last connection error goes in the status

    def stats(self) -> AgentStats:
        """A snapshot of the counters; safe to read from any thread."""
        state, recorder = self._state, self._recorder
        window, outbox = state.window, state.outbox
        oldest = None if outbox is None else outbox.oldest_event_ts
        evicted = recorder.evictions.by_priority
        return AgentStats(
            depth=0 if outbox is None else outbox.depth(),
            size_bytes=0 if outbox is None else outbox.size_bytes,
            published=state.published,
            acked=state.acked,
            resent=state.resent,
            reconnects=max(state.connects - 1, 0),
            rejected=recorder.rejected,
            duplicates=recorder.duplicates,
            evicted_by_priority=tuple(
                (name, evicted[priority]) for name, priority in zip(_PRIORITY_NAMES, wire.Priority, strict=True)
            ),
            publish_rate=self._publish_rate.rate,
            ack_rate=self._ack_rate.rate,
            acks_refused_by_reason=tuple((reason, state.acks_refused.get(reason, 0)) for reason in _REFUSED_ACKS),
            last_ack_seq=0 if window is None else window.acked_seq,
            connected=state.connected,
            oldest_unacked_age_s=None if oldest is None else max(0.0, (self._clock.now() - oldest).total_seconds()),
            devices_up=tuple((device.device_id, device.up) for device in self._devices.supervisors),
            disk_full_since=None if outbox is None else outbox.disk_full_since,
            writes_failing=recorder.write_failing is not None,
            wal_bytes=0 if outbox is None else outbox.wal_bytes(),
        )

    def report(self) -> wire.GatewayHealth:
        """The health report as of now, as the agent publishes it."""
        stats = self.stats()
        state, recorder = self._state, self._recorder
        now = self._clock.monotonic()
        write_failing = recorder.write_failing
        problems = describe_problems(
            broker=self._config.mqtt.address,
            connected=stats.connected,
            disconnected_for_s=None if state.disconnected_at is None else now - state.disconnected_at,
            depth=stats.depth,
            ack_stalled_for_s=self._hub_silent_for(now),
            write_failing=None if write_failing is None else (now - write_failing[0], write_failing[1]),
            devices_down=[
                (device.device_id, down_for, device.last_error)
                for device in self._devices.supervisors
                if (down_for := device.down_for(now)) is not None
            ],
            devices_attention=[
                (device.device_id, attention)
                for device in self._devices.supervisors
                if device.up
                and (driver := device.driver) is not None
                and (attention := driver.health().attention) is not None
            ],
            queued=recorder.queued,
            evicting=recorder.evictions.episode,
            disk_full_since=stats.disk_full_since,
        )
        problems.extend(self._extra_problems())
        return wire.GatewayHealth(
            store_id=self._config.store_id,
            gateway_id=self._config.gateway_id,
            ts=self._clock.now(),
            outbox_depth=stats.depth,
            oldest_unacked_age_s=stats.oldest_unacked_age_s,
            published_total=stats.published,
            acked_total=stats.acked,
            resent_total=stats.resent,
            reconnects_total=stats.reconnects,
            evicted_total=stats.evicted,
            duplicates_dropped_total=stats.duplicates,
            outbox_bytes=stats.size_bytes,
            publish_rate=round(stats.publish_rate, 1),
            ack_rate=round(stats.ack_rate, 1),
            problems=problems,
        )

    def _hub_silent_for(self, now: float) -> float | None:
        window = self._state.window
        silent_for = None if window is None else window.hub_silent_for(now)
        return silent_for if silent_for is not None and silent_for >= self._config.outbox.ack_timeout_s else None

    async def run(self, link: MqttLink) -> None:
        """The health publisher: the status file at once, then a report each interval or wake-up; until cancelled."""
        state, clock = self._state, self._clock
        interval_s = self._config.health.interval_s
        next_report = clock.monotonic() + interval_s  # or at the first connect
        self._link = link
        await self.write_status(running=True)  # at once, so `storegate agent status` has something to say
        while True:
            now = clock.monotonic()
            self._publish_rate.sample(now, state.published)
            self._ack_rate.sample(now, state.acked)
            if state.wake_health.is_set() or now >= next_report:
                state.wake_health.clear()
                next_report = now + interval_s
                await self._publish(link)
            await wait_for_event(state.wake_health, max(0.0, min(RATE_SAMPLE_S, next_report - now)))

    async def _publish(self, link: MqttLink) -> None:
        report = self.report()
        if report.problems and not self._problems_logged:
            log.warning("health_degraded", problems=report.problems)
        elif not report.problems and self._problems_logged:
            log.info("health_recovered")
        self._problems_logged = bool(report.problems)
        if link.connected:
            link.publish(self._topic, wire.encode(report), qos=0, retain=True)
        await self.write_status(running=True, report=report)

    async def write_status(self, *, running: bool, report: wire.GatewayHealth | None = None) -> None:
        """Write the status file: the stats, and the problems of ``report`` (of a new one when None)."""
        report = report or self.report()
        stats = self.stats()
        state, config, recorder = self._state, self._config, self._recorder
        now = self._clock.monotonic()
        status = AgentStatusFile(
            pid=os.getpid(),
            written_at=self._clock.now(),
            running=running,
            store_id=config.store_id,
            gateway_id=config.gateway_id,
            broker=config.mqtt.address,
            connected=stats.connected,
            disconnected_for_s=None if state.disconnected_at is None else now - state.disconnected_at,
            health_interval_s=config.health.interval_s,
            outbox_depth=stats.depth,
            outbox_bytes=stats.size_bytes,
            oldest_unacked_age_s=stats.oldest_unacked_age_s,
            publish_rate=stats.publish_rate,
            ack_rate=stats.ack_rate,
            published_total=stats.published,
            acked_total=stats.acked,
            resent_total=stats.resent,
            evicted_total=stats.evicted,
            evicted_by_priority=dict(stats.evicted_by_priority),
            reconnects_total=stats.reconnects,
            duplicates_total=stats.duplicates,
            rejected_total=stats.rejected,
            problems=report.problems,
            disk_full_since=stats.disk_full_since,
            write_failing_since=None
            if recorder.write_failing is None
            else self._clock.now() - timedelta(seconds=now - recorder.write_failing[0]),
            last_write_at=recorder.last_write_at,
            last_connection_error=None if self._link is None or stats.connected else self._link.last_error,
            devices=self.device_states(now),
        )
        await self._status_file.write(status)

    def device_states(self, now: float) -> list[DeviceState]:
        """Every running device's state, for the status file (``storegate agent status`` lists them)."""
        states = []
        for device in self._devices.supervisors:
            driver = device.driver
            states.append(
                DeviceState(
                    device_id=device.device_id,
                    up=device.up,
                    down_for_s=device.down_for(now),
                    last_error=None if device.up else device.last_error,
                    attention=None if driver is None or not device.up else driver.health().attention,
                )
            )
        return states
