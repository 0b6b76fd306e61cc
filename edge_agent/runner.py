"""``storegate agent``: load the config, run the agent until SIGINT or SIGTERM, return an exit code."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import structlog

from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.errors import AgentFailedError
from edge_agent.outbox import OutboxError
from edge_agent.print_jobs import PrintJobsError
from edge_agent.updates import Updater, update_home
from storegate.configfile import ConfigError
from storegate.logs import configure_logging
from storegate.process import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, stop_on_signals
from storegate.secret_files import SecretFileError

log = structlog.get_logger(__name__)


async def _serve(config: AgentConfig, home: Path) -> int:
    stop = asyncio.Event()
    updater = Updater(config=config, home=home, request_stop=stop.set)  # the `update` command: docs/updates.md
    with stop_on_signals(stop):
        try:
            agent = EdgeAgent(config=config, gateway_commands=updater.commands)
            async with updater.watching(agent):
                await agent.run(stop)
        # Outbox or print jobs unusable, metrics port taken, TLS file missing, a secret file made readable since the
        # config was read.
        except (OutboxError, PrintJobsError, OSError, SecretFileError) as err:
            log.error("agent_cannot_start", error=str(err))
            return EXIT_FAILED
        except AgentFailedError as err:
            log.error("agent_failed", error=str(err))
            return EXIT_FAILED
    return updater.exit_code(EXIT_OK)


def run_agent(config_path: Path) -> int:
    """Run the agent of ``config_path`` until SIGINT/SIGTERM: 0 after a clean stop, 2 for a bad config, 1 else."""
    # Logging first: loading the config may warn (a broker password written inline), and that warning
    # belongs in the agent's log like any other.
    configure_logging(process="agent")
    try:
        config = load_agent_config(config_path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    return asyncio.run(_serve(config, update_home(config_path)))
