"""Commands from the hub (``commands`` topic) to the devices they name, each result on ``command_results``.

A ``print`` command for a device is not run here: it is handed to the durable print queue
(:mod:`edge_agent.print_jobs`), which stores it before anything is answered, answers ``accepted``,
prints it when the printer is there and publishes the final result, which may be hours later.

Every other command runs in its own task, so a slow device never holds up acks or other devices'
commands; one that takes longer than :data:`COMMAND_TIMEOUT_S` is answered "failed". The
results of the last :data:`COMMAND_RESULTS_KEPT` commands are kept, so a command the broker
delivers again (QoS 1) is answered from memory rather than run twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final, Literal, TypeAlias
from uuid import UUID

import structlog

from device_drivers.base import CommandNotSupportedError, DriverError
from edge_agent.print_jobs import PRINT_COMMAND
from storegate import wire

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig
    from edge_agent.hotplug import DeviceManager
    from edge_agent.print_jobs import PrintJobs
    from storegate.clock import Clock
    from storegate.mqtt import MqttLink

log = structlog.get_logger(__name__)

# A device command that takes longer than this is answered "failed" (the device may still finish it).
COMMAND_TIMEOUT_S: Final = 30.0
# Results of recent commands kept to answer a redelivered command (QoS 1) without running it twice.
COMMAND_RESULTS_KEPT: Final = 1000
# ``restart`` for a device: its driver is stopped and started again, answered once it is open or after this long.
RESTART_COMMAND: Final = "restart"
RESTART_TIMEOUT_S: Final = 30.0

FinalStatus: TypeAlias = Literal["done", "failed", "rejected", "expired"]
# Publishes a non-final ``accepted`` result with this detail: "stored, applying; the outcome follows".
Progress: TypeAlias = Callable[[str], None]
# A command for the gateway itself (no device_id): runs the command and returns its final status and detail.
# It may take minutes (a config on probation, an update), so it is not held to COMMAND_TIMEOUT_S; it calls
# ``progress`` first when the outcome will take a while, so the hub shows "accepted" meanwhile.
GatewayCommandHandler: TypeAlias = Callable[[wire.Command, Progress], Awaitable[tuple[FinalStatus, str]]]


class Commands:
    """Runs the hub's commands on ``devices`` and publishes each result; ``topic`` is where commands arrive.

    ``print_jobs`` takes the ``print`` commands (None: they run like any other command). ``gateway_commands``
    are the commands for the gateway itself (no ``device_id``), by name, beside the built-in ``ping``.
    """

    def __init__(
        self,
        *,
        config: AgentConfig,
        clock: Clock,
        devices: DeviceManager,
        print_jobs: PrintJobs | None = None,
        gateway_commands: Mapping[str, GatewayCommandHandler] | None = None,
    ) -> None:
        store, gateway = config.store_id, config.gateway_id
        self._store_id, self._gateway_id = store, gateway
        self._clock = clock
        self._devices = devices
        self._print_jobs = print_jobs
        self.topic = wire.topic(store, gateway, wire.Channel.COMMANDS)
        self._results_topic = wire.topic(store, gateway, wire.Channel.COMMAND_RESULTS)
        self._results: dict[UUID, wire.CommandResult] = {}
        self._gateway_commands: dict[str, GatewayCommandHandler] = dict(gateway_commands or {})
        self._running: set[UUID] = set()  # commands being run now: a redelivery of one is not run again
        self._tasks: set[asyncio.Task[None]] = set()
        self.rejected = 0  # commands that were no valid Command

    def register(self, name: str, handler: GatewayCommandHandler) -> None:
        """Answer the gateway command ``name`` (no ``device_id``) with ``handler``."""
        self._gateway_commands[name] = handler

    def start(self, link: MqttLink, raw: bytes) -> None:
        """Run the command ``raw`` in a task of its own; its result goes out on ``link``."""
        # Each command in its own task: a slow device never holds up acks or other devices' commands.
        task = asyncio.create_task(self._run(link, raw), name="agent command")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> asyncio.Future[list[BaseException | None]]:
        """Cancel the commands running now; the future returned is done once they have ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, link: MqttLink, raw: bytes) -> None:
        try:
            command = wire.decode(wire.Command, raw)
        except wire.WireError as err:
            self.rejected += 1
            log.warning("command_invalid", reason=err.reason, detail=err.detail)
            return  # without a valid command_id there is no one to answer
        if (command.store_id, command.gateway_id) != (self._store_id, self._gateway_id):
            log.warning("command_for_other_gateway", store_id=command.store_id, gateway_id=command.gateway_id)
            return
        if self._print_jobs is not None and command.name == PRINT_COMMAND and command.device_id is not None:
            try:
                await self._print_jobs.submit(command)  # stored, then answered by the queue
                return
            except Exception as err:  # the queue's file failed: say so rather than leave the hub waiting
                log.error("print_job_not_stored", command_id=str(command.command_id), exc_info=err)
                refused = self._answer(command, "failed", f"the gateway could not store the print job: {err}")
                if link.connected:
                    link.publish(self._results_topic, wire.encode(refused), qos=1)
                return
        result = self._results.get(command.command_id)
        if result is None:
            if command.command_id in self._running:
                log.info("command_redelivered_while_running", command=command.name, command_id=str(command.command_id))
                return  # its result goes out when it ends

            def progress(detail: str) -> None:
                if link.connected:
                    link.publish(self._results_topic, wire.encode(self._answer(command, "accepted", detail)), qos=1)

            self._running.add(command.command_id)
            try:
                result = await self._execute(command, progress)
            finally:
                self._running.discard(command.command_id)
            self._results[command.command_id] = result
            while len(self._results) > COMMAND_RESULTS_KEPT:
                self._results.pop(next(iter(self._results)))
        log.info("command_done", command=command.name, device_id=command.device_id, status=result.status)
        if link.connected:
            link.publish(self._results_topic, wire.encode(result), qos=1)

    def _answer(
        self, command: wire.Command, status: Literal["accepted", "done", "failed", "rejected", "expired"], detail: str
    ) -> wire.CommandResult:
        return wire.CommandResult(
            command_id=command.command_id,
            store_id=command.store_id,
            gateway_id=command.gateway_id,
            status=status,
            detail=detail[:2000],
            ts=self._clock.now(),
        )

    async def _execute(self, command: wire.Command, progress: Progress) -> wire.CommandResult:
        def answer(status: FinalStatus, detail: str) -> wire.CommandResult:
            return self._answer(command, status, detail)

        if command.expires_at is not None and command.expires_at <= self._clock.now():
            return answer("expired", f"expired at {command.expires_at.isoformat()}")
        if command.device_id is None:
            if command.name == "ping":
                return answer("done", "pong")
            handler = self._gateway_commands.get(command.name)
            if handler is None:
                known = ", ".join(sorted(["ping", *self._gateway_commands]))
                return answer(
                    "rejected", f"the gateway has no command {command.name!r} (it has: {known}); or name a device_id"
                )
            try:
                status, detail = await handler(command, progress)
            except Exception as err:  # a handler bug answers "failed" and is logged; the agent goes on
                log.error("gateway_command_crashed", command=command.name, exc_info=err)
                return answer("failed", f"the gateway failed to run {command.name!r}: {err!r}")
            return answer(status, detail)
        supervisor = self._devices.supervisor(command.device_id)
        if supervisor is None:
            known = ", ".join(self._devices.device_ids) or "none"
            return answer("rejected", f"no device {command.device_id!r} on this gateway (devices: {known})")
        if command.name == RESTART_COMMAND:
            return await self._restart(command)
        try:
            return await asyncio.wait_for(supervisor.execute(command), COMMAND_TIMEOUT_S)
        except CommandNotSupportedError as err:
            return answer("rejected", str(err))
        except DriverError as err:
            return answer("failed", str(err))
        except TimeoutError:
            return answer("failed", f"no answer from {command.device_id} within {COMMAND_TIMEOUT_S:.0f} s")
        except Exception as err:  # a driver bug answers "failed" and is logged; the agent goes on
            log.error("command_crashed", command=command.name, device_id=command.device_id, exc_info=err)
            return answer("failed", f"the driver failed: {err!r}")

    async def _restart(self, command: wire.Command) -> wire.CommandResult:
        """Stop a device's driver and start it again: ``done`` once it is open again, else ``failed``."""
        assert command.device_id is not None
        if command.args:
            return self._answer(command, "rejected", f"restart takes no arguments, got {sorted(command.args)}")
        try:
            up, detail = await self._devices.restart(command.device_id, timeout_s=RESTART_TIMEOUT_S)
        except KeyError:
            return self._answer(command, "rejected", f"{command.device_id!r} stopped running before its restart")
        return self._answer(command, "done" if up else "failed", detail)
