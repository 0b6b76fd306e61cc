"""``storegate agent``: run the agent of a config file until SIGINT or SIGTERM, return an exit code.

The agent's work restarts in the same process when the hub pushes a config (:mod:`edge_agent.remote_config`):
the running :class:`~edge_agent.agent.EdgeAgent` stops cleanly (devices first, then every queued reading is
committed to the outbox), and a new one starts on the new file, with the same outbox, so no event is dropped.
Beside each agent, :meth:`RemoteConfig.settle` judges a config on probation and publishes the outcome.
An ``update`` command (:mod:`edge_agent.updates`) stops the work for good instead: the process exits with
``EXIT_SWITCH`` and the launcher (:mod:`launcher.releases`) runs the new release.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from edge_agent.agent import EdgeAgent
from edge_agent.commands import FinalStatus, GatewayCommandHandler, Progress
from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.errors import AgentFailedError
from edge_agent.outbox import OutboxError
from edge_agent.print_jobs import PrintJobsError
from edge_agent.remote_config import APPLY_COMMAND, RESEND_COMMAND, RemoteConfig, ResendArgs
from edge_agent.updates import Updater, update_home
from storegate import wire
from storegate.configfile import ConfigError, describe_validation_error
from storegate.logs import configure_logging
from storegate.process import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, stop_on_signals
from storegate.secret_files import SecretFileError

log = structlog.get_logger(__name__)

# What stops an agent from starting or running: outbox or print jobs unusable, metrics port taken, TLS file
# missing, a secret file made readable since the config was read, one of its own tasks failing.
AGENT_FAILURES = (OutboxError, PrintJobsError, OSError, SecretFileError, AgentFailedError)


async def resend(agent: EdgeAgent, command: wire.Command, progress: Progress) -> tuple[FinalStatus, str]:
    """The ``resend`` handler: the outbox's events from ``args.from_seq`` on go to the hub again."""
    try:
        args = ResendArgs.model_validate(command.args)
    except ValidationError as err:
        return "rejected", "resend: " + "; ".join(describe_validation_error(err))
    seqs = agent.resend_after(args.from_seq - 1)
    if seqs is None:
        return "done", f"nothing to resend: no event from seq {args.from_seq} on is still on the gateway"
    first, last = seqs
    held = "" if first == args.from_seq else f" (up to {first - 1} the hub has acknowledged them: deleted here)"
    return "done", f"resending seqs {first}..{last}{held}"


async def _run_once(
    config: AgentConfig, remote: RemoteConfig, stop: asyncio.Event, options: Mapping[str, Any], *, home: Path
) -> int | None:
    """Run one agent until ``stop`` or a pushed config's restart: None when the work should start again, else the
    exit code (``EXIT_SWITCH`` after an update switched releases)."""
    restart = asyncio.Event()
    agent_stop = asyncio.Event()
    # The `update` command (docs/updates.md) stops the work for good: the launcher runs the new release next.
    updater = Updater(config=config, home=home, request_stop=stop.set)

    async def run_watched() -> None:
        async with updater.watching(agent):
            await agent.run(agent_stop)

    async def resend_here(command: wire.Command, progress: Progress) -> tuple[FinalStatus, str]:
        return await resend(agent, command, progress)

    commands: dict[str, GatewayCommandHandler] = {
        APPLY_COMMAND: partial(remote.apply, running=config, restart=restart),
        RESEND_COMMAND: resend_here,
        **updater.commands,
    }
    agent = EdgeAgent(config=config, gateway_commands=commands, **options)
    run = asyncio.create_task(run_watched(), name="agent")
    settle = asyncio.create_task(remote.settle(agent, restart), name="agent config settle")
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(restart.wait())]
    try:
        await asyncio.wait([run, *waiters], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        agent_stop.set()
        settle.cancel()  # an unpublished outcome stays in its record: the next agent publishes it
        await asyncio.gather(settle, return_exceptions=True)
    try:
        await run
    except AGENT_FAILURES as err:
        record = remote.pending()
        if record is None or record.phase != "probation":
            raise
        # The new config starts but cannot run: that is a failed probation too.
        await asyncio.to_thread(remote.roll_back, record, f"the agent failed with version {record.version}: {err}")
        return None
    if stop.is_set():
        return updater.exit_code(EXIT_OK)
    log.info("agent_restarting", reason="a config pushed by the hub")
    return None


async def serve(config_path: Path, stop: asyncio.Event, **options: Any) -> int:
    """Run the agent of ``config_path`` until ``stop`` is set, restarting its work for each pushed config.

    Returns the exit code: ``EXIT_OK``, or ``EXIT_SWITCH`` after an update. Raises ConfigError for a config that
    cannot be used (and none to roll back to), and the errors of :data:`AGENT_FAILURES`. ``options`` go to each
    :class:`EdgeAgent` (test seams).
    """
    remote = RemoteConfig(config_path=config_path)
    home = update_home(config_path)
    await asyncio.to_thread(remote.recover_on_start)
    while True:
        try:
            config = await asyncio.to_thread(load_agent_config, config_path)
        except ConfigError as err:
            record = remote.pending()
            if record is None or record.phase != "probation":
                raise
            problems = "; ".join(err.problems)
            await asyncio.to_thread(remote.roll_back, record, f"version {record.version} cannot be loaded: {problems}")
            continue
        code = await _run_once(config, remote, stop, options, home=home)
        if code is not None:
            return code


async def _serve(config_path: Path) -> int:
    stop = asyncio.Event()
    with stop_on_signals(stop):
        try:
            return await serve(config_path, stop)
        except ConfigError as err:
            print(err, file=sys.stderr)
            return EXIT_CONFIG
        except AgentFailedError as err:
            log.error("agent_failed", error=str(err))
            return EXIT_FAILED
        except AGENT_FAILURES as err:
            log.error("agent_cannot_start", error=str(err))
            return EXIT_FAILED
    return EXIT_OK


def run_agent(config_path: Path) -> int:
    """Run the agent of ``config_path`` until SIGINT/SIGTERM: 0 after a clean stop, 2 for a bad config, 1 else."""
    # Logging first: loading the config may warn (a broker password written inline), and that warning
    # belongs in the agent's log like any other.
    configure_logging(process="agent")
    return asyncio.run(_serve(config_path))
