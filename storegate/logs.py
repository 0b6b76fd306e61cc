"""Structured logging for every Storegate process.

structlog renders both its own events and those of libraries logging through
the standard library (paho, uvicorn, alembic), as JSON lines when the output is
not a terminal (a service) and as readable key=value lines when it is.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(*, level: str = "INFO", json: bool | None = None, process: str | None = None) -> None:
    """Route all logging through structlog; ``process`` names the component in every line."""
    if json is None:
        json = not sys.stderr.isatty()
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


def worth_logging(count: int) -> bool:
    """The 1st, 10th, 100th... of a run of the same trouble: enough to see it, not one line per occurrence."""
    return count > 0 and str(count).rstrip("0") == "1"
