"""How the agent reports on itself: counters, rates, problems in words, and the Prometheus endpoint."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server

log = structlog.get_logger(__name__)


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
    queued: int = 0,
    evicting: tuple[int, str] | None = None,
) -> list[str]:
    """What is wrong, in words for the people who read the hub's gateway page; empty when all is well.

    ``queued``: readings held in memory while writes fail. ``evicting``: events evicted since
    the outbox filled up, and the quota in words, while it is full.
    """
    problems: list[str] = []
    waiting = _count(depth, "event") + " waiting"
    if not connected:
        since = f" for {disconnected_for_s:.0f} s" if disconnected_for_s is not None else ""
        problems.append(f"broker {broker} unreachable{since}; {waiting}")
    elif ack_stalled_for_s is not None:
        problems.append(f"hub has not acknowledged for {ack_stalled_for_s:.0f} s; {waiting}")
    if evicting is not None:
        evicted, quota = evicting
        problems.append(
            f"outbox full ({quota}): {_count(evicted, 'event')} evicted so far, telemetry first; the hub is told which"
        )
    if write_failing is not None:
        failing_for_s, error = write_failing
        held = f"; {_count(queued, 'reading')} held in memory, devices wait" if queued else ""
        problems.append(f"outbox writes failing for {failing_for_s:.0f} s: {error}{held}")
    for device_id, down_for_s, device_error in devices_down:
        reason = f": {device_error}" if device_error else ""
        problems.append(f"device {device_id} down for {down_for_s:.0f} s{reason}")
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


def agent_registry(snapshot: Callable[[], AgentStats]) -> CollectorRegistry:
    """A registry of its own for one agent, so several agents (or tests) in one process do not collide."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(snapshot))
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
