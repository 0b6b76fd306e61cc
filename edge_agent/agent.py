"""The edge agent: device readings in, durable events out, deleted only when the hub has them.

Data path::

    drivers --record()--> bounded queue --writer--> SQLite outbox --sender--> MQTT events topic
                                                          ^                          |
                                                          +---- ack handler <--------+ hub's Ack

:class:`EdgeAgent` owns the units and their tasks; each unit is a module of its own:

- :mod:`edge_agent.recorder`: ``record()`` validates a reading once against the wire contract
  and serialises its payload; the writer group-commits queued readings to the outbox (one
  fsync a group), evicts and retries when the disk is full, and counts evictions.
- :mod:`edge_agent.uplink`: the sender splices stored JSON into ``EventBatch`` messages as
  the :class:`~edge_agent.window.SendWindow` allows (the backlog oldest-first, security and
  sales events ahead of it), rewinding after every (re)connect and ack timeout, and holds a
  part-filled batch briefly while one is unacknowledged. At-least-once; the hub stores idempotently.
- :mod:`edge_agent.acks`: the ack handler deletes rows up to ``through_seq``, resends at once
  the seqs an ack names as ``gaps``, and reports seqs the hub lost after acknowledging them
  as ``not_held``.
- :mod:`edge_agent.commands`: commands from the hub (``commands`` topic) go to the device
  they name; each result is published on ``command_results``.
- :mod:`edge_agent.print_jobs`: ``print`` commands are stored in their own SQLite file, printed
  once their printer is up, and answered (``accepted``, then ``done`` or ``failed``) until the
  broker has the answer.
- :mod:`edge_agent.presence`: a retained birth status on every connect (again when the
  devices change), a retained "lost" last will, and a retained "shutdown" status on a clean stop.
- :mod:`edge_agent.health` / :mod:`edge_agent.status`: a retained health message and the
  status file every ``health.interval_s``, Prometheus ``/metrics`` on request.
- :mod:`edge_agent.snapshots`: a reading's attachment (a camera still) is kept in a spool within a
  quota and uploaded to the hub's gateway listener with the gateway's certificate; a shelf pick asks
  the cameras that watch the shelf for a still.
- Each device runs in its own :class:`DeviceSupervisor` task, kept by the
  :class:`DeviceManager`, which also starts and stops hot-plugged devices.

What the units share is one :class:`~edge_agent.state.AgentState`.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Mapping
from functools import partial
from typing import Final, Literal
from uuid import UUID

import structlog

from device_drivers.base import Reading
from device_drivers.profiles import ProfileCatalog
from edge_agent.acks import AckHandler
from edge_agent.commands import Commands, GatewayCommandHandler
from edge_agent.config import AgentConfig, catalog_of, print_jobs_path
from edge_agent.devices import DriverBuilder, DriverFactory
from edge_agent.errors import AgentFailedError
from edge_agent.health import AgentStats, HealthReporter, MetricsServer, agent_registry
from edge_agent.hotplug import DeviceManager, PortLister, default_lister
from edge_agent.outbox import Outbox, Quota
from edge_agent.presence import Presence
from edge_agent.print_jobs import PrintJobs, PrintJobsCollector
from edge_agent.recorder import Recorder
from edge_agent.renewal import (
    CertificateRenewer,
    RenewalCollector,
    finish_interrupted_renewal,
    renewal_hub_url,
)
from edge_agent.snapshots import (
    ShelfPickSnapshots,
    SnapshotCollector,
    SnapshotSpool,
    SnapshotUploader,
    client_ssl_context,
    quota_bytes,
    spool_directory,
)
from edge_agent.state import AgentState
from edge_agent.status import StatusFile, status_path
from edge_agent.timing import Backoff
from edge_agent.uplink import Uplink, new_window
from storegate import wire
from storegate.clock import Clock, SystemClock
from storegate.mqtt import QUEUED_RCS, MqttLink
from storegate.tasks import BackgroundTask

log = structlog.get_logger(__name__)

# Uploads of camera stills failing this long are a health problem (a hub restart or a short outage is not).
UPLOADS_FAILING_PROBLEM_S: Final = 300.0


class EdgeAgent:
    """One gateway's agent. Runs once: ``await agent.run(stop)`` until ``stop`` is set.

    ``clock``, ``driver_factory``, ``device_backoff``, ``rng``, ``catalog`` and ``port_lister``
    (the hot-plug port list; None turns hot-plug off) are seams for tests. ``gateway_commands`` answer the
    hub's commands for the gateway itself (:data:`edge_agent.commands.GatewayCommandHandler`).
    """

    def __init__(
        self,
        *,
        config: AgentConfig,
        clock: Clock | None = None,
        driver_factory: DriverFactory | None = None,
        device_backoff: Backoff | None = None,
        rng: random.Random | None = None,
        catalog: ProfileCatalog | None = None,
        port_lister: PortLister | Literal["default"] | None = "default",
        gateway_commands: Mapping[str, GatewayCommandHandler] | None = None,
    ) -> None:
        self.config = config
        self._clock: Clock = clock or SystemClock()
        rng = rng or random.Random()  # jitter only; nothing secret
        self._ran = False
        self.status_path = status_path(config.outbox.path)
        self._state = state = AgentState()
        self._rng = rng
        self.spool = SnapshotSpool(
            directory=spool_directory(config.snapshots, config.outbox.path), quota_bytes=quota_bytes(config.snapshots)
        )
        """Camera stills waiting for the hub (opened when the agent runs)."""
        self._uploader: SnapshotUploader | None = None
        self._link: MqttLink | None = None  # while the agent runs
        self._upload_context: ssl.SSLContext | None = None
        self.renewer: CertificateRenewer | None = None
        """Renews the gateway's certificate (while the agent runs, when ``[renewal]`` can: a certificate, a hub)."""
        self._uploads_off: str | None = None  # why stills cannot be uploaded at all, when a file is unusable
        self._recorder = recorder = Recorder(config=config, clock=self._clock, rng=rng, state=state, spool=self.spool)
        # The recorder's own methods, not wrappers: record() is the hot path, one call per reading.
        self.record = recorder.record
        """Queue one reading for the outbox: :meth:`edge_agent.recorder.Recorder.record`."""
        self.flush = recorder.flush
        """Wait until every reading recorded so far is committed: :meth:`edge_agent.recorder.Recorder.flush`."""

        catalog = catalog if catalog is not None else catalog_of(config)
        builder = DriverBuilder(catalog=catalog)
        factory = driver_factory
        self._devices = DeviceManager(
            devices=config.devices,
            build=builder if factory is None else (lambda device, identity: factory(device)),
            catalog=catalog,
            record=self._record_from_device,
            backoff=device_backoff or Backoff(),
            clock=self._clock,
            rng=rng,
            committed_mark=recorder.committed_mark,
            hotplug=config.hotplug,
            lister=default_lister(config.hotplug, catalog) if port_lister == "default" else port_lister,
            # Presence and the print jobs are made below; devices start and stop only once the agent runs.
            on_change=self._devices_changed,
        )
        self._shelf_pick_snapshots = ShelfPickSnapshots(
            store_id=config.store_id,
            gateway_id=config.gateway_id,
            devices=lambda: self._devices.supervisors,
            clock=self._clock,
        )
        self._presence = Presence(config=config, clock=self._clock, state=state, devices=self._devices)
        configured = frozenset(device.device_id for device in config.devices)
        self._print_jobs = PrintJobs(
            path=print_jobs_path(config),
            config=config.print_jobs,
            store_id=config.store_id,
            gateway_id=config.gateway_id,
            devices=self._devices,
            known_device=configured.__contains__,
            clock=self._clock,
            rng=rng,
        )
        self._commands = Commands(
            config=config,
            clock=self._clock,
            devices=self._devices,
            print_jobs=self._print_jobs,
            gateway_commands=gateway_commands,
        )
        self._health = HealthReporter(
            config=config,
            clock=self._clock,
            state=state,
            recorder=recorder,
            devices=self._devices,
            status_file=StatusFile(path=self.status_path),
            extra_problems=lambda: [
                *self._print_jobs.problems(),
                *self._snapshot_problems(),
                *self._renewal_problems(),
            ],
        )
        self.registry = agent_registry(self._health.stats)
        self.registry.register(PrintJobsCollector(self._print_jobs.stats))
        self.registry.register(SnapshotCollector(lambda: self.spool.stats))
        self.registry.register(RenewalCollector(lambda: self.renewer))
        self._metrics = (
            None
            if config.health.metrics_port is None
            else MetricsServer(registry=self.registry, host=config.health.metrics_host, port=config.health.metrics_port)
        )

    async def _record_from_device(self, reading: Reading) -> None:
        """A device's reading: recorded, then a pick asks the cameras that watch its shelf for a still."""
        await self._recorder.record(reading)
        self._shelf_pick_snapshots.observe(reading)

    # ------------------------------------------------------------------ public state

    @property
    def stats(self) -> AgentStats:
        """A snapshot of the counters; safe to read from any thread."""
        return self._health.stats()

    def health(self) -> wire.GatewayHealth:
        """The health report as of now, as the agent publishes it."""
        return self._health.report()

    @property
    def stream(self) -> UUID | None:
        """The outbox's stream UUID once the agent has opened it, else None."""
        outbox = self._state.outbox
        return None if outbox is None else outbox.stream

    @property
    def outbox(self) -> Outbox | None:
        """The open outbox while the agent runs (for tests and tools; the agent owns it)."""
        return self._state.outbox

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on while the agent runs (the bound one when configured as 0)."""
        return None if self._metrics is None else self._metrics.port

    @property
    def devices(self) -> DeviceManager:
        """The gateway's devices (for tests and tools; the agent owns them)."""
        return self._devices

    @property
    def print_jobs(self) -> PrintJobs:
        """The durable print queue (for tests and tools; the agent owns it, open while it runs)."""
        return self._print_jobs

    @property
    def connected(self) -> bool:
        """Whether the agent is connected to the broker now (its birth went out on this connection)."""
        return self._state.connected

    @property
    def acked(self) -> int:
        """Events the hub has acknowledged since this agent started."""
        return self._state.acked

    def waiting_events(self) -> int:
        """Events in the outbox waiting for the hub's ack (0 before the outbox is open)."""
        outbox = self._state.outbox
        return 0 if outbox is None else outbox.depth()

    def device_up(self, device_id: str) -> bool | None:
        """Whether a device's driver is open now; None when no such device runs."""
        supervisor = self._devices.supervisor(device_id)
        return None if supervisor is None else supervisor.up

    async def publish_command_result(self, result: wire.CommandResult, *, timeout_s: float = 5.0) -> bool:
        """Publish ``result`` (QoS 1) and wait for the broker's PUBACK; False when not connected or not acknowledged.

        For a result that outlives the agent that got the command (a config on probation across a restart): its
        record is forgotten only once the broker has the result.
        """
        link = self._link
        if link is None or not self._state.connected:
            return False
        topic = wire.topic(self.config.store_id, self.config.gateway_id, wire.Channel.COMMAND_RESULTS)
        info = link.publish(topic, wire.encode(result), qos=1)
        if info.rc not in QUEUED_RCS:
            return False
        try:
            await asyncio.to_thread(info.wait_for_publish, timeout_s)
        except (RuntimeError, ValueError):  # the connection dropped meanwhile, or the client's queue is full
            return False
        return info.is_published()

    def resend_after(self, seq: int) -> tuple[int, int] | None:
        """Send the events above ``seq`` still in the outbox again; the seqs that go (first, last), or None.

        What the hub has acknowledged is deleted here and cannot go again: the first seq sent is the
        first one still held. The hub's idempotent store keeps each event once.
        """
        outbox, window = self._state.outbox, self._state.window
        if outbox is None or window is None:
            return None
        first, last = max(seq, window.acked_seq) + 1, outbox.last_seq
        if first > last:
            return None
        window.request_resend_after(first - 1)
        self._state.wake_sender.set()
        log.info("resend_requested", first_seq=first, last_seq=last)
        return first, last

    def _devices_changed(self) -> None:
        self._presence.devices_changed()
        self._print_jobs.devices_changed()

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then drain queued readings into the outbox and disconnect cleanly.

        Raises OutboxError when the outbox cannot be opened, OSError when the metrics
        port cannot be bound, and AgentFailedError when one of the agent's own tasks fails.
        """
        if self._ran:
            raise RuntimeError("an EdgeAgent runs once; create a new one to run again")
        self._ran = True
        mqtt = self.config.mqtt
        if mqtt.cert_file is not None and mqtt.key_file is not None:
            finished = await asyncio.to_thread(finish_interrupted_renewal, mqtt.cert_file, mqtt.key_file)
            if finished is not None:
                log.warning("certificate_renewal_interrupted", outcome=finished, cert_file=str(mqtt.cert_file))
        outbox_config = self.config.outbox
        try:
            async with (
                Outbox(
                    path=outbox_config.path,
                    quota=Quota(max_events=outbox_config.max_events, max_bytes=outbox_config.max_bytes),
                    loss_device_id=self.config.gateway_id,
                    now=self._clock.now,
                ) as outbox,
                self._print_jobs,
            ):
                self._state.outbox = outbox
                await asyncio.to_thread(self.spool.open)
                await self._run_with_outbox(outbox, stop)
        finally:
            self._recorder.stop_accepting()

    async def _run_with_outbox(self, outbox: Outbox, stop: asyncio.Event) -> None:
        config, clock, state = self.config, self._clock, self._state
        store, gateway = config.store_id, config.gateway_id
        window = state.window = new_window(config=config, outbox=outbox, now=clock.monotonic())
        state.disconnected_at = clock.monotonic()
        log.info(
            "agent_starting",
            store_id=store,
            gateway_id=gateway,
            stream=str(outbox.stream),
            outbox=str(outbox.path),
            waiting=outbox.depth(),
            broker=config.mqtt.address,
        )
        link = MqttLink(
            settings=config.mqtt,
            client_id=f"storegate-agent-{store}-{gateway}",
            subscriptions=[(wire.topic(store, gateway, wire.Channel.ACK), 1), (self._commands.topic, 1)],
            will=self._presence.will(),
            # Called only once connected, after `uplink` below exists.
            on_connect=lambda: self._connected(link, uplink),
            on_disconnect=self._presence.disconnected,
            queue_size=1000,
        )
        uplink = Uplink(config=config, clock=clock, state=state, outbox=outbox, link=link, window=window)
        self._link = link
        acks = AckHandler(
            config=config,
            clock=clock,
            state=state,
            outbox=outbox,
            link=link,
            window=window,
            uplink=uplink,
            evictions=self._recorder.evictions,
            commands=self._commands,
        )
        devices = BackgroundTask(self._devices.run, name="device manager")
        uploader = self._snapshot_uploader()
        renewal = self._certificate_renewal(link)
        core = {
            "writer": BackgroundTask(partial(self._recorder.run, outbox), name="agent writer"),
            "sender": BackgroundTask(uplink.run, name="agent sender"),
            "ack handler": BackgroundTask(acks.run, name="agent ack handler"),
            "health publisher": BackgroundTask(partial(self._health.run, link), name="agent health publisher"),
            "print jobs": BackgroundTask(partial(self._print_jobs.run, link), name="agent print jobs"),
        }
        failure: BaseException | None = None
        try:
            if self._metrics is not None:
                self._metrics.start()
            # The configured devices start before the first connect, so that the birth lists them: the
            # manager starts them in its first step, which this one turn of the loop runs (ordering, not
            # waiting). Readings they make meanwhile wait in the queue for the writer.
            devices.start()
            await asyncio.sleep(0)
            await link.__aenter__()
            for task in core.values():
                task.start()
            if uploader is not None:
                uploader.start()
            if renewal is not None:
                renewal.start()
            failure = await self._until_stopped_or_failed(stop, core)
        finally:
            for optional in (uploader, renewal):
                if optional is not None:
                    optional.cancel()
                    await optional.wait()
            await self._shelf_pick_snapshots.stop()
            await self._shutdown(core, devices, link)
            if self._metrics is not None:
                await asyncio.to_thread(self._metrics.stop)
        if failure is not None:
            raise AgentFailedError(f"the agent stopped because a task failed: {failure!r}") from failure
        log.info("agent_stopped", waiting=outbox.depth(), published=state.published, acked=state.acked)

    def _snapshot_problems(self) -> list[str]:
        """The stills' problems in words, for the health report: uploads off for a broken file, or failing a while."""
        if self._uploads_off is not None:
            return [
                f"camera stills cannot be uploaded: {self._uploads_off}; {self.spool.stats.waiting} kept on the gateway"
            ]
        uploader = self._uploader
        if uploader is None or uploader.failing_since is None:
            return []
        failing_for = self._clock.monotonic() - uploader.failing_since
        if failing_for < UPLOADS_FAILING_PROBLEM_S:
            return []
        return [
            f"camera stills not reaching the hub for {failing_for:.0f} s ({self.spool.stats.waiting} waiting): "
            f"{uploader.last_error}"
        ]

    def _snapshot_uploader(self) -> BackgroundTask | None:
        """The task that sends spooled stills to the hub, when ``[snapshots] hub_url`` says where it is."""
        config = self.config.snapshots
        mqtt = self.config.mqtt
        if config.hub_url is None or mqtt.cert_file is None:
            log.info("snapshot_uploads_off", reason="no [snapshots] hub_url", waiting=self.spool.stats.waiting)
            return None
        try:
            context = client_ssl_context(ca_file=mqtt.ca_file, cert_file=mqtt.cert_file, key_file=mqtt.key_file)
        except (OSError, ssl.SSLError) as err:
            # The stills stay in the spool (within its quota) and the events go on: only the uploads wait for a fix.
            log.error("snapshot_uploads_off", reason="the gateway's TLS files cannot be used", error=str(err))
            self._uploads_off = f"the gateway's TLS files cannot be used ({err})"
            return None
        self._upload_context = context
        uploader = SnapshotUploader(
            spool=self.spool,
            store_id=self.config.store_id,
            hub_url=config.hub_url,
            ssl_context=context,
            clock=self._clock,
            rng=self._rng,
            timeout_s=config.timeout_s,
            backoff=Backoff(initial_s=min(1.0, config.retry_max_s), max_s=config.retry_max_s),
        )
        self._uploader = uploader
        return BackgroundTask(uploader.run, name="snapshot uploader")

    def _renewal_problems(self) -> list[str]:
        problem = None if self.renewer is None else self.renewer.problem()
        return [] if problem is None else [problem]

    def _certificate_renewal(self, link: MqttLink) -> BackgroundTask | None:
        """The task that renews the certificate before it ends, when there is one and a hub to ask."""
        mqtt = self.config.mqtt
        hub_url = renewal_hub_url(self.config.renewal, self.config.snapshots.hub_url)
        if not self.config.renewal.enabled or mqtt.cert_file is None or mqtt.key_file is None or hub_url is None:
            log.info(
                "certificate_renewal_off", reason="no client certificate or no hub_url, or [renewal] enabled=false"
            )
            return None

        def renewed() -> None:
            link.reload_client_certificate()
            if self._upload_context is not None and mqtt.cert_file is not None:
                self._upload_context.load_cert_chain(str(mqtt.cert_file), str(mqtt.key_file))

        self.renewer = CertificateRenewer(
            config=self.config.renewal,
            hub_url=hub_url,
            ca_file=mqtt.ca_file,
            cert_file=mqtt.cert_file,
            key_file=mqtt.key_file,
            common_name=f"{self.config.store_id}/{self.config.gateway_id}",
            clock=self._clock,
            on_renewed=renewed,
        )
        return BackgroundTask(self.renewer.run, name="certificate renewal")

    def _connected(self, link: MqttLink, uplink: Uplink) -> None:
        self._presence.connected(link)  # the birth
        uplink.reconnected()
        self._print_jobs.connected()  # answers the broker has not acknowledged go out again

    @staticmethod
    async def _until_stopped_or_failed(stop: asyncio.Event, core: dict[str, BackgroundTask]) -> BaseException | None:
        """Wait until ``stop`` is set or a core task ends; the failure of the task(s) that ended, if any."""
        waiters = [
            asyncio.create_task(stop.wait(), name="agent stop"),
            *(asyncio.create_task(task.wait(), name=f"agent {name} watch") for name, task in core.items()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        failure: BaseException | None = None
        for name, task in core.items():
            if not task.running:
                failure = task.failure or RuntimeError(f"the {name} task ended on its own")
                log.error("agent_task_failed", task=name, error=repr(failure), exc_info=failure)
        return failure

    async def _shutdown(self, core: dict[str, BackgroundTask], devices: BackgroundTask, link: MqttLink) -> None:
        # Devices first, so nothing new arrives; then commit what they reported.
        devices.cancel()
        commands_ended = self._commands.cancel()
        await devices.wait()
        await commands_ended
        await self._recorder.finish(drain=core["writer"].running)
        for task in core.values():
            task.cancel()
        for task in core.values():
            await task.wait()
        # The last status, as things stand before the agent disconnects on purpose.
        await self._health.write_status(running=False)
        await self._presence.shutdown(link)
