"""Structured logging for every Storegate process.

structlog renders both its own events and those of libraries logging through
the standard library (paho, uvicorn, alembic), as JSON lines when the output is
not a terminal (a service) and as readable key=value lines when it is.

Every service takes ``--log-format json|console`` and ``--log-level``; the options are kept in the environment
(storegate.log_options), so the processes a service starts (the demo's parts) log the same
way, and a systemd unit can set them with ``Environment=``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from enum import StrEnum

import structlog

from storegate.log_options import LOG_FORMAT_ENV, LOG_LEVEL_ENV, LogFormat, LogLevel


def _requested(environ: Mapping[str, str], name: str, choices: type[StrEnum]) -> tuple[str | None, str | None]:
    """The value of ``name`` if it is one of ``choices``; else None and, when it is set to something else, why."""
    raw = environ.get(name, "").strip()
    if not raw:
        return None, None
    wanted = raw.upper() if choices is LogLevel else raw.lower()
    if wanted in {choice.value for choice in choices}:
        return wanted, None
    return None, f"{name}={raw!r} is not one of {', '.join(choice.value for choice in choices)}; ignored"


def configure_logging(
    *,
    level: str = "INFO",
    json: bool | None = None,
    process: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Route all logging through structlog; ``process`` names the component in every line.

    ``level`` is the service's own (the hub's ``log_level`` setting); a requested ``--log-level`` wins over it.
    ``json`` None: the requested ``--log-format``, else JSON unless stderr is a terminal.
    """
    env = os.environ if environ is None else environ
    requested_format, format_problem = _requested(env, LOG_FORMAT_ENV, LogFormat)
    requested_level, level_problem = _requested(env, LOG_LEVEL_ENV, LogLevel)
    level = requested_level or level
    if json is None:
        json = requested_format == LogFormat.JSON if requested_format else not sys.stderr.isatty()
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.PositionalArgumentsFormatter(),
    ]
    if process is not None:
        structlog.contextvars.bind_contextvars(process=process)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn installs its own handlers; make it use ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # pymodbus logs every unanswered request at ERROR with a frame dump; the Modbus drivers log
    # a silent device once, on the transition, and count the rest, so its own log stays quiet.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    for problem in (format_problem, level_problem):
        if problem is not None:  # said once the lines can be read, and the service goes on with the default
            structlog.get_logger(__name__).warning("log_option_ignored", problem=problem)


def worth_logging(count: int) -> bool:
    """The 1st, 10th, 100th... of a run of the same trouble: enough to see it, not one line per occurrence."""
    return count > 0 and str(count).rstrip("0") == "1"
