"""The ``--log-format`` and ``--log-level`` every service takes, kept in the environment.

Apart from :mod:`storegate.logs` so the ``storegate`` command can declare them without importing structlog. Kept in
the environment so the processes a service starts (the demo's parts) log the same way, and so a systemd unit can set
them with ``Environment=``.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from enum import StrEnum
from typing import Final

LOG_FORMAT_ENV: Final = "STOREGATE_LOG_FORMAT"
LOG_LEVEL_ENV: Final = "STOREGATE_LOG_LEVEL"


class LogFormat(StrEnum):
    """How log lines are written: one JSON object a line (for journald, Loki...) or readable key=value lines."""

    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    """The least severe level written."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


def request_log_options(
    log_format: LogFormat | None, log_level: LogLevel | None, environ: MutableMapping[str, str] | None = None
) -> None:
    """Keep a service's ``--log-format``/``--log-level`` for :func:`configure_logging` and the processes it starts."""
    env = os.environ if environ is None else environ
    if log_format is not None:
        env[LOG_FORMAT_ENV] = log_format.value
    if log_level is not None:
        env[LOG_LEVEL_ENV] = log_level.value
