"""Answering hub commands: a result for a command, and the ``ping`` every driver answers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from device_drivers.base import CommandNotSupportedError
from storegate.wire import Command, CommandResult

ResultStatus = Literal["done", "failed", "rejected"]


def command_result(command: Command, status: ResultStatus, detail: str, *, now: datetime) -> CommandResult:
    """What became of ``command`` on this device: ``done``, ``failed`` (the device said no) or ``rejected``."""
    return CommandResult(
        command_id=command.command_id,
        store_id=command.store_id,
        gateway_id=command.gateway_id,
        status=status,
        detail=detail,
        ts=now,
    )


def answer_ping(
    command: Command, *, device_id: str, now: datetime, detail: str = "pong", ok: bool = True
) -> CommandResult:
    """``done`` (``failed`` when not ``ok``) with ``detail`` for ``ping``; CommandNotSupportedError otherwise."""
    if command.name != "ping":
        raise CommandNotSupportedError(f"{device_id} does not support command {command.name!r}")
    return command_result(command, "done" if ok else "failed", detail, now=now)
