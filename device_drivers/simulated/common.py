"""What every simulated device answers the same way."""

from __future__ import annotations

from datetime import datetime

from device_drivers.base import CommandNotSupportedError
from storegate.wire import Command, CommandResult


def answer_ping(command: Command, *, device_id: str, now: datetime) -> CommandResult:
    """A simulated device's only command is ``ping``; anything else is not supported."""
    if command.name != "ping":
        raise CommandNotSupportedError(f"{device_id} does not support command {command.name!r}")
    return CommandResult(
        command_id=command.command_id,
        store_id=command.store_id,
        gateway_id=command.gateway_id,
        status="done",
        detail="pong",
        ts=now,
    )
