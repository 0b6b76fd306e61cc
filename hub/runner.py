"""``storegate hub``: load the settings, serve the hub until SIGINT or SIGTERM, return an exit code."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from hub.app import HubStartupError, serve
from hub.settings import HubSettings, load_hub_settings
from storegate.configfile import ConfigError
from storegate.logs import configure_logging
from storegate.process import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, stop_on_signals

log = structlog.get_logger(__name__)


async def _serve(settings: HubSettings) -> int:
    stop = asyncio.Event()
    # uvicorn handles these signals while it serves and raises them again when it is done; these
    # handlers take that second delivery, so a clean stop ends with exit code 0.
    with stop_on_signals(stop):
        try:
            await serve(settings, stop=stop)
        except HubStartupError as err:
            log.error("hub_cannot_start", error=str(err))
            return EXIT_FAILED
    return EXIT_OK


def run_hub(config_path: Path | None, overrides: Mapping[str, Any] | None = None) -> int:
    """Run the hub until SIGINT/SIGTERM: 0 after a clean stop, 2 for bad settings, 1 when it cannot start."""
    try:
        settings = load_hub_settings(config_path, **dict(overrides or {}))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(level=settings.log_level, process="hub")
    return asyncio.run(_serve(settings))
