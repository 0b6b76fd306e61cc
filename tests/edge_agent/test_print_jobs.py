"""Durable print jobs on the gateway: stored before answered, printed once, results back to the hub.

Each test runs a real agent (its outbox, its print-jobs SQLite file, a real Mosquitto) with one device,
``printer-1``, whose driver is :class:`PaperPrinter`'s: a test double of the printer driver family
(built elsewhere) at the lowest layer, implementing the Driver protocol and its print contract. An
operator client on the broker plays the hub: it publishes the ``print`` commands and collects the
``command_results``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device_drivers.base import (
    DeviceNotReadyError,
    DeviceUnavailableError,
    DriverError,
    DriverHealth,
    DriverState,
    Reading,
)
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig, DeviceConfig
from edge_agent.print_jobs import JobState, Outcome, PrintJobs, PrintJobsError, describe_waiting, outcome_of
from edge_agent.timing import Backoff
from launcher.broker import LocalBroker, start_mosquitto
from storegate import wire
from storegate.clock import SYSTEM_CLOCK
from storegate.mqtt import MqttSettings
from tests.conftest import eventually, file_mode, wait_until
from tests.edge_agent.conftest import GATEWAY, STORE, make_config, running

PRINTER = "printer-1"
RESULTS = wire.topic(STORE, GATEWAY, wire.Channel.COMMAND_RESULTS)
COMMANDS = wire.topic(STORE, GATEWAY, wire.Channel.COMMANDS)
STATUS = wire.topic(STORE, GATEWAY, wire.Channel.STATUS)


# --------------------------------------------------------------------------- the printer double


@dataclass
class Copy:
    """One copy that came out of the printer: which job, which attempt, and whether it is whole."""

    command_id: str
    attempt: int
    complete: bool

    @property
    def marked_reprint(self) -> bool:
        """The driver prints a REPRINT line on every attempt after the first."""
        return self.attempt > 1


@dataclass
class PaperPrinter:
    """The printer as the driver family's contract describes it, with what it printed.

    ``present`` False: opening the driver fails (unplugged or off). ``failures`` are raised by the next
    jobs in turn; a DeviceUnavailableError leaves a partial copy (the job was interrupted). ``hang``, when
    set, makes a job block until the test cancels it (the agent stops mid-job).
    """

    present: bool = True
    paper: list[Copy] = field(default_factory=list)
    failures: list[DriverError] = field(default_factory=list)
    hang: bool = False
    executing: int = 0

    def driver(self, config: DeviceConfig) -> PrinterDriver:
        assert config.device_id == PRINTER
        return PrinterDriver(self)

    def copies(self, command_id: uuid.UUID) -> list[Copy]:
        return [c for c in self.paper if c.command_id == str(command_id)]


class PrinterDriver:
    """A Driver (device_drivers.base) on a :class:`PaperPrinter`."""

    def __init__(self, printer: PaperPrinter) -> None:
        self._printer = printer
        self._open = False
        self._gone = asyncio.Event()

    async def __aenter__(self) -> Self:
        if not self._printer.present:
            raise DeviceUnavailableError(f"{PRINTER} is not plugged in")
        self._open = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._open = False
        self._gone.set()

    async def readings(self) -> AsyncIterator[Reading]:
        await self._gone.wait()  # a printer reports nothing here; it is up until closed
        return
        yield  # an async generator

    async def execute(self, command: wire.Command) -> wire.CommandResult:
        printer = self._printer
        assert command.name == "print"
        attempt = command.args["attempt"]
        assert isinstance(attempt, int)
        printer.executing += 1
        if printer.hang:
            await asyncio.Event().wait()  # cancelled when the agent stops
        if printer.failures:
            failure = printer.failures.pop(0)
            if isinstance(failure, DeviceUnavailableError) and not isinstance(failure, DeviceNotReadyError):
                printer.paper.append(Copy(str(command.command_id), attempt, complete=False))
            raise failure
        printer.paper.append(Copy(str(command.command_id), attempt, complete=True))
        return wire.CommandResult(
            command_id=command.command_id,
            store_id=command.store_id,
            gateway_id=command.gateway_id,
            status="done",
            detail=f"printed {len(command.args.get('lines') or [])} lines on {PRINTER}",  # type: ignore[arg-type]
            ts=wire.utc_now(),
        )

    def health(self) -> DriverHealth:
        return DriverHealth(state=DriverState.UP if self._open else DriverState.CLOSED)


# --------------------------------------------------------------------------- the hub's side of the broker


class Operator:
    """A paho client in the hub's place: publishes commands, collects results (a session the broker keeps)."""

    def __init__(self, settings: MqttSettings) -> None:
        self._lock = threading.Lock()
        self._results: list[wire.CommandResult] = []
        self.births = 0  # the agent's birth messages received live (not the retained one)
        self._subscribed = threading.Event()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"operator-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = lambda c, *_: c.subscribe([(RESULTS, 1), (STATUS, 1)])
        self.resubscribed = threading.Event()  # set on every subscription, first or after a reconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 300  # the broker queues results for it while it reconnects
        self.client.connect(settings.host, settings.port, keepalive=10, properties=properties)
        self.client.loop_start()
        wait_until(self._subscribed.is_set, timeout=5, what="operator subscribed")

    def _on_subscribe(self, *_: object) -> None:
        self._subscribed.set()
        self.resubscribed.set()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            if message.topic == STATUS:
                status = wire.decode(wire.GatewayStatus, bytes(message.payload))
                if status.reason == "birth" and not message.retain:
                    self.births += 1
                return
            self._results.append(wire.decode(wire.CommandResult, bytes(message.payload)))

    def send(self, command: wire.Command) -> None:
        info = self.client.publish(COMMANDS, wire.encode(command), qos=1)
        info.wait_for_publish(5)
        assert info.is_published()

    def results(self, command: wire.Command) -> list[wire.CommandResult]:
        with self._lock:
            return [r for r in self._results if r.command_id == command.command_id]

    def statuses(self, command: wire.Command) -> list[str]:
        return [r.status for r in self.results(command)]

    async def final(self, command: wire.Command, *, count: int = 1, timeout: float = 15) -> wire.CommandResult:
        """The command's final result, once ``count`` of them have arrived."""

        async def arrived() -> list[wire.CommandResult]:
            finals = [r for r in self.results(command) if r.status != "accepted"]
            return finals if len(finals) >= count else []

        return (await eventually(arrived, timeout=timeout, what=f"{count} final result(s) of {command.name}"))[-1]

    async def accepted(self, command: wire.Command) -> None:
        await eventually(
            lambda: _async("accepted" in self.statuses(command)), timeout=10, what="the command's 'accepted'"
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def _async(value: bool) -> bool:
    return value


@pytest.fixture
def operator(mqtt_settings: MqttSettings) -> Iterator[Operator]:
    client = Operator(mqtt_settings)
    try:
        yield client
    finally:
        client.close()


def print_command(*, expires_in: timedelta | None = timedelta(hours=4), device_id: str = PRINTER) -> wire.Command:
    now = wire.utc_now()
    return wire.Command(
        command_id=uuid.uuid4(),
        store_id=STORE,
        gateway_id=GATEWAY,
        device_id=device_id,
        name="print",
        args={"title": "Restock shelf-a1 slot 2", "lines": ["A1-2 Biscuits x8"], "task_id": "t-1"},
        issued_at=now,
        expires_at=None if expires_in is None else now + expires_in,
    )


def agent_config(tmp_path: Path, mqtt: MqttSettings, **print_jobs: Any) -> AgentConfig:
    return make_config(
        tmp_path,
        mqtt,
        devices=[{"device_id": PRINTER, "driver": "simulated-sequence", "count": 1}],  # its driver: the double's
        print_jobs={"retry_initial_s": 0.05, "retry_max_s": 0.3, **print_jobs},
    )


def new_agent(config: AgentConfig, printer: PaperPrinter) -> EdgeAgent:
    return EdgeAgent(
        config=config,
        driver_factory=printer.driver,
        device_backoff=Backoff(initial_s=0.05, max_s=0.3),
        port_lister=None,
    )


@asynccontextmanager
async def agent_running(config: AgentConfig, printer: PaperPrinter, operator: Operator) -> AsyncIterator[EdgeAgent]:
    agent = new_agent(config, printer)
    births = operator.births
    async with running(agent):
        # The agent publishes its birth after it has sent its SUBSCRIBE on the same connection: once the
        # birth has reached the operator, the broker has the subscription and commands reach the agent.
        await eventually(lambda: _async(operator.births > births), timeout=10, what="the agent's birth")
        yield agent


async def job_state(agent: EdgeAgent, command: wire.Command) -> tuple[JobState, int] | None:
    return await agent.print_jobs.job_state(str(command.command_id))


# --------------------------------------------------------------------------- the pure part


def test_what_an_attempt_comes_to() -> None:
    cid = uuid.uuid4()
    done = wire.CommandResult(
        command_id=cid, store_id=STORE, gateway_id=GATEWAY, status="done", detail="printed", ts=wire.utc_now()
    )
    assert outcome_of(PRINTER, 2, done) == Outcome(JobState.PRINTED, "done", "printed (attempt 2)", retry=False)
    offline = outcome_of(PRINTER, 1, DeviceUnavailableError("paper out"))
    assert (offline.state, offline.retry, offline.detail) == (JobState.QUEUED, True, "printer-1: paper out")
    assert outcome_of(PRINTER, 1, TimeoutError()).retry
    invalid = outcome_of(PRINTER, 1, DriverError("no lines to print"))
    assert (invalid.state, invalid.status, invalid.retry) == (JobState.FAILED, "failed", False)
    assert "no lines to print" in invalid.detail
    bug = outcome_of(PRINTER, 1, KeyError("width"))
    assert (bug.state, bug.retry) == (JobState.FAILED, False)


def test_jobs_waiting_too_long_are_a_problem_in_words() -> None:
    waiting = [("printer-1", 1000.0), ("printer-1", 1500.0), ("printer-2", 1590.0)]
    assert describe_waiting(waiting, now=1600.0, warn_after_s=300) == [
        "2 print jobs waiting for printer printer-1, the oldest for 10 min"
    ]
    assert describe_waiting(waiting, now=1600.0, warn_after_s=900) == []


async def test_the_jobs_file_is_private_and_a_second_user_of_it_is_refused(tmp_path: Path) -> None:
    config = AgentConfig.model_validate(
        {"store_id": STORE, "gateway_id": GATEWAY, "outbox": {"path": tmp_path / "outbox.sqlite3"}}
    )
    path = tmp_path / "jobs" / "print-jobs.sqlite"

    def jobs() -> PrintJobs:
        return PrintJobs(
            path=path,
            config=config.print_jobs,
            store_id=STORE,
            gateway_id=GATEWAY,
            devices=NoDevices(),
            known_device=lambda device_id: True,
            clock=SYSTEM_CLOCK,
        )

    async with jobs() as first:
        await first.submit(print_command())  # writes: SQLite takes its exclusive lock
        assert file_mode(path) == "0600"
        with pytest.raises(PrintJobsError, match="in use by another process"):
            async with jobs():
                pass
        assert first.stats().waiting == 1
    async with jobs() as again:  # free again once the first has closed it
        assert again.stats().waiting == 1


class NoDevices:
    """No device is running (the queue takes jobs for configured ones all the same)."""

    def supervisor(self, device_id: str) -> None:
        return None


# --------------------------------------------------------------------------- with a running agent


async def test_a_job_is_stored_before_it_is_answered_and_survives_a_restart(
    tmp_path: Path, mqtt_settings: MqttSettings, operator: Operator
) -> None:
    printer = PaperPrinter(present=False)
    config = agent_config(tmp_path, mqtt_settings)
    command = print_command()
    async with agent_running(config, printer, operator) as agent:
        operator.send(command)
        await operator.accepted(command)
        # By the time the hub hears "accepted" the job is committed, and never handed to the absent printer.
        assert await job_state(agent, command) == (JobState.QUEUED, 0)
        (accepted,) = operator.results(command)
        assert accepted.detail == "stored on the gateway, waiting for printer printer-1"
    path = tmp_path / "print-jobs.sqlite"
    assert file_mode(path) == "0600"
    async with agent_running(config, printer, operator) as agent:  # restarted: the job is still there
        assert await job_state(agent, command) == (JobState.QUEUED, 0)
        printer.present = True
        done = await operator.final(command)
    assert done.status == "done"
    assert [(c.attempt, c.complete) for c in printer.copies(command.command_id)] == [(1, True)]


async def test_a_redelivered_command_is_answered_from_the_queue_and_not_printed_again(
    tmp_path: Path, mqtt_settings: MqttSettings, operator: Operator
) -> None:
    printer = PaperPrinter()
    config = agent_config(tmp_path, mqtt_settings)
    command = print_command()
    async with agent_running(config, printer, operator):
        operator.send(command)
        first = await operator.final(command)
        operator.send(command)  # the broker delivered it again
        again = await operator.final(command, count=2)
    async with agent_running(config, printer, operator) as agent:  # and again after a restart
        operator.send(command)
        after_restart = await operator.final(command, count=3)
        assert agent.print_jobs.stats().redelivered == 1
    assert first.status == "done"
    assert first.detail == "printed 1 lines on printer-1 (attempt 1)"
    assert again == first
    assert after_restart == first
    assert len(printer.copies(command.command_id)) == 1
    assert printer.executing == 1


async def test_a_job_waits_for_an_absent_printer_and_prints_once_when_it_appears(
    tmp_path: Path, mqtt_settings: MqttSettings, operator: Operator
) -> None:
    printer = PaperPrinter(present=False)
    config = agent_config(tmp_path, mqtt_settings, warn_after_s=0.01)
    command = print_command()
    async with agent_running(config, printer, operator) as agent:
        operator.send(command)
        await operator.accepted(command)
        assert await job_state(agent, command) == (JobState.QUEUED, 0)
        stats = agent.print_jobs.stats()
        assert (stats.waiting, stats.printed) == (1, 0)
        assert stats.oldest_waiting_age_s is not None
        problems = agent.health().problems
        assert any(p.startswith("1 print job waiting for printer printer-1, the oldest for") for p in problems)
        printer.present = True
        done = await operator.final(command)
        assert done.status == "done"
        assert agent.print_jobs.stats().printed == 1
        assert agent.print_jobs.stats().waiting == 0
        assert not any("print job" in p for p in agent.health().problems)
        metrics = _metrics(agent)
        assert "storegate_agent_print_jobs_printed_total 1.0" in metrics
        assert "storegate_agent_print_jobs_waiting 0.0" in metrics
    assert operator.statuses(command) == ["accepted", "done"]
    assert [(c.attempt, c.complete) for c in printer.paper] == [(1, True)]


def _metrics(agent: EdgeAgent) -> str:
    from prometheus_client import generate_latest

    return generate_latest(agent.registry).decode()


async def test_a_printer_that_drops_mid_job_reprints_it_marked_as_attempt_2_with_one_done(
    tmp_path: Path, mqtt_settings: MqttSettings, operator: Operator
) -> None:
    printer = PaperPrinter(failures=[DeviceUnavailableError("connection lost mid-job; it may be partly printed")])
    config = agent_config(tmp_path, mqtt_settings)
    command = print_command()
    async with agent_running(config, printer, operator) as agent:
        operator.send(command)
        done = await operator.final(command)
        assert await job_state(agent, command) == (JobState.PRINTED, 2)
        assert agent.print_jobs.stats().reprinted == 1
    assert done.detail == "printed 1 lines on printer-1 (attempt 2)"
    copies = printer.copies(command.command_id)
    assert [(c.attempt, c.complete, c.marked_reprint) for c in copies] == [(1, False, False), (2, True, True)]
    assert [s for s in operator.statuses(command) if s != "accepted"] == ["done"]


async def test_a_printer_out_of_paper_prints_the_job_once_without_a_reprint_mark(
    tmp_path: Path, mqtt_settings: MqttSettings, operator: Operator
) -> None:
    # The driver refuses before sending anything (its status check found no paper): nothing reached paper,
    # so the copy printed once paper is back is the first, unmarked one.
    printer = PaperPrinter(
        failures=[DeviceNotReadyError("printer-1 is out of paper"), DeviceNotReadyError("cover open")]
    )
    config = agent_config(tmp_path, mqtt_settings)
    command = print_command()
    async with agent_running(config, printer, operator) as agent:
        operator.send(command)
        done = await operator.final(command)
        assert await job_state(agent, command) == (JobState.PRINTED, 1)
        assert agent.print_jobs.stats().reprinted == 0
    assert printer.executing == 3
    assert done.detail == "printed 1 lines on printer-1 (attempt 1)"
    assert [(c.attempt, c.complete, c.marked_reprint) for c in printer.copies(command.command_id)] == [(1, True, False)]


async def test_a_job_that_outlives_its_command_fails_with_the_reason(
    tmp_path: Path, mqtt_settings: MqttSettings, operator: Operator
) -> None:
    printer = PaperPrinter(present=False)
    config = agent_config(tmp_path, mqtt_settings)
    command = print_command(expires_in=timedelta(seconds=1))
    stale = print_command(expires_in=timedelta(seconds=-1))  # expired before it reached the gateway
    async with agent_running(config, printer, operator) as agent:
        operator.send(command)
        operator.send(stale)
        failed = await operator.final(command)
        refused = await operator.final(stale)
        assert await job_state(agent, command) == (JobState.FAILED, 0)
        assert agent.print_jobs.stats().failed == 2
    assert failed.status == "failed"
    assert failed.detail.startswith("not printed: expired at ")
    assert failed.detail.endswith("waiting for printer-1 (never handed to the printer)")
    assert refused.status == "expired"
    assert printer.paper == []


async def test_an_invalid_job_fails_at_once_and_an_unknown_printer_is_rejected(
    tmp_path: Path, mqtt_settings: MqttSettings, operator: Operator
) -> None:
    printer = PaperPrinter(failures=[DriverError("the job has no lines the printer can print")])
    config = agent_config(tmp_path, mqtt_settings)
    command = print_command()
    nowhere = print_command(device_id="printer-9")
    async with agent_running(config, printer, operator) as agent:
        operator.send(command)
        operator.send(nowhere)
        failed = await operator.final(command)
        rejected = await operator.final(nowhere)
        assert await job_state(agent, command) == (JobState.FAILED, 1)
    assert (failed.status, failed.detail) == (
        "failed",
        "printer-1 refused the job: the job has no lines the printer can print",
    )
    assert rejected.status == "rejected"
    assert "no printer 'printer-9' on this gateway" in rejected.detail
    assert printer.paper == []


async def test_a_job_interrupted_by_a_crash_is_printed_again_as_a_reprint(
    tmp_path: Path, mqtt_settings: MqttSettings, operator: Operator
) -> None:
    printer = PaperPrinter(hang=True)
    config = agent_config(tmp_path, mqtt_settings)
    command = print_command()
    async with agent_running(config, printer, operator) as agent:
        operator.send(command)
        await eventually(lambda: _async(printer.executing == 1), timeout=10, what="the job handed to the printer")
        assert await job_state(agent, command) == (JobState.PRINTING, 1)
    # The agent stopped with the job on the printer: whether it printed is unknown.
    printer.hang = False
    async with agent_running(config, printer, operator) as agent:
        done = await operator.final(command)
        assert await job_state(agent, command) == (JobState.PRINTED, 2)
    assert done.detail.endswith("(attempt 2)")
    assert [(c.attempt, c.marked_reprint) for c in printer.copies(command.command_id)] == [(2, True)]


async def test_a_damaged_stored_job_fails_with_its_reason_and_the_next_one_prints(
    tmp_path: Path, mqtt_settings: MqttSettings, operator: Operator
) -> None:
    printer = PaperPrinter(present=False)
    config = agent_config(tmp_path, mqtt_settings)
    damaged, intact = print_command(), print_command()
    async with agent_running(config, printer, operator):
        operator.send(damaged)
        operator.send(intact)
        await operator.accepted(damaged)
        await operator.accepted(intact)
    # Between two runs the SD card garbles the first job's stored command.
    with sqlite3.connect(tmp_path / "print-jobs.sqlite") as db:
        db.execute("UPDATE jobs SET command = ? WHERE command_id = ?", (b'{"v": 1, "comm', str(damaged.command_id)))
    db.close()
    printer.present = True
    async with agent_running(config, printer, operator) as agent:
        failed = await operator.final(damaged)
        done = await operator.final(intact)
        assert agent.print_jobs.stats().failed == 1
    assert failed.status == "failed"
    assert failed.detail.startswith("the gateway could not read the stored job back (malformed_json: ")
    assert done.status == "done"
    assert [c.command_id for c in printer.paper] == [str(intact.command_id)]


async def test_results_wait_for_the_broker_and_go_out_when_the_link_is_back(tmp_path: Path) -> None:
    broker: LocalBroker = start_mosquitto(tmp_path / "mosquitto", persistence=True)
    try:
        settings = MqttSettings(host=broker.host, port=broker.port, reconnect_min_s=0.2, reconnect_max_s=1.0)
        operator = Operator(settings)
        printer = PaperPrinter(present=False)
        command = print_command()
        # The agent comes back to the broker after the operator (1 s), whose subscription must be there again when
        # the result goes out: a broker that lost the operator's session would drop it, and the test would blame
        # the agent for what the broker did.
        slow_reconnect = settings.model_copy(update={"reconnect_min_s": 3.0, "reconnect_max_s": 3.0})
        try:
            async with agent_running(agent_config(tmp_path, slow_reconnect), printer, operator) as agent:
                operator.send(command)
                await operator.accepted(command)
                await asyncio.to_thread(broker.stop)  # the broker goes away (its sessions are saved)
                operator.resubscribed.clear()
                printer.present = True  # and the printer comes back meanwhile
                await eventually(
                    lambda: _printed(agent, command), timeout=15, what="the job printed while the broker is away"
                )
                assert operator.statuses(command) == ["accepted"]
                await asyncio.to_thread(broker.restart)
                await asyncio.to_thread(operator.resubscribed.wait, 10)
                done = await operator.final(command, timeout=20)
        finally:
            operator.close()
    finally:
        broker.stop(kill=True)
    assert done.status == "done"
    assert len(printer.copies(command.command_id)) == 1


async def _printed(agent: EdgeAgent, command: wire.Command) -> bool:
    state = await job_state(agent, command)
    return state is not None and state[0] is JobState.PRINTED
