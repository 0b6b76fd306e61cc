"""``storegate agent``: load the config, run the agent until SIGINT or SIGTERM, return an exit code."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Final

import structlog

from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.errors import AgentFailedError
from edge_agent.outbox import OutboxError
from storegate.configfile import ConfigError
from storegate.logs import configure_logging

log = structlog.get_logger(__name__)

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_CONFIG: Final = 2


async def _serve(config: AgentConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await EdgeAgent(config=config).run(stop)
    except (OutboxError, OSError) as err:  # outbox unusable, metrics port taken, TLS file missing
        log.error("agent_cannot_start", error=str(err))
        return EXIT_FAILED
    except AgentFailedError as err:
        log.error("agent_failed", error=str(err))
        return EXIT_FAILED
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return EXIT_OK


def run_agent(config_path: Path) -> int:
    """Run the agent of ``config_path`` until SIGINT/SIGTERM: 0 after a clean stop, 2 for a bad config, 1 else."""
    try:
        config = load_agent_config(config_path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(process="agent")
    return asyncio.run(_serve(config))
