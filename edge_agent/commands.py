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
from typing import TYPE_CHECKING, Final, Literal
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


class Commands:
    """Runs the hub's commands on ``devices`` and publishes each result; ``topic`` is where commands arrive.

    ``print_jobs`` takes the ``print`` commands (None: they run like any other command).
    """

    def __init__(
        self, *, config: AgentConfig, clock: Clock, devices: DeviceManager, print_jobs: PrintJobs | None = None
    ) -> None:
        store, gateway = config.store_id, config.gateway_id
        self._store_id, self._gateway_id = store, gateway
        self._clock = clock
        self._devices = devices
        self._print_jobs = print_jobs
        self.topic = wire.topic(store, gateway, wire.Channel.COMMANDS)
        self._results_topic = wire.topic(store, gateway, wire.Channel.COMMAND_RESULTS)
        self._results: dict[UUID, wire.CommandResult] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.rejected = 0  # commands that were no valid Command

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
            result = await self._execute(command)
            self._results[command.command_id] = result
            while len(self._results) > COMMAND_RESULTS_KEPT:
                self._results.pop(next(iter(self._results)))
        log.info("command_done", command=command.name, device_id=command.device_id, status=result.status)
        if link.connected:
            link.publish(self._results_topic, wire.encode(result), qos=1)

    def _answer(
        self, command: wire.Command, status: Literal["done", "failed", "rejected", "expired"], detail: str
    ) -> wire.CommandResult:
        return wire.CommandResult(
            command_id=command.command_id,
            store_id=command.store_id,
            gateway_id=command.gateway_id,
            status=status,
            detail=detail[:2000],
            ts=self._clock.now(),
        )

    async def _execute(self, command: wire.Command) -> wire.CommandResult:
        def answer(status: Literal["done", "failed", "rejected", "expired"], detail: str) -> wire.CommandResult:
            return self._answer(command, status, detail)

        if command.expires_at is not None and command.expires_at <= self._clock.now():
            return answer("expired", f"expired at {command.expires_at.isoformat()}")
        if command.device_id is None:
            if command.name == "ping":
                return answer("done", "pong")
            return answer("rejected", f"the gateway has no command {command.name!r}; name a device_id")
        supervisor = self._devices.supervisor(command.device_id)
        if supervisor is None:
            known = ", ".join(self._devices.device_ids) or "none"
            return answer("rejected", f"no device {command.device_id!r} on this gateway (devices: {known})")
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
