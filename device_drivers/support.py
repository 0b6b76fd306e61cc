"""What drivers share: reject counting and the ``ping`` answer (the clock is :mod:`storegate.clock`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from device_drivers.base import CommandNotSupportedError
from storegate.logs import worth_logging
from storegate.wire import Command, CommandResult


class RejectCounter:
    """Counts what a driver rejected (bad frames, bus errors) and logs the 1st, 10th, 100th... of a run."""

    def __init__(self, *, logger: Any, device_id: str) -> None:
        self._log = logger
        self._device_id = device_id
        self.total = 0
        self.by_reason: dict[str, int] = {}
        self.last_error: str | None = None
        self._run = 0

    def reject(self, reason: str, detail: str, **context: object) -> None:
        """Count one reject; log it when it is the 1st, 10th, 100th... in a row."""
        self.total += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        self.last_error = f"{reason}: {detail} (rejected_total={self.total})"
        self._run += 1
        if worth_logging(self._run):
            self._log.warning(
                "reading_rejected",
                device_id=self._device_id,
                reason=reason,
                detail=detail,
                in_a_row=self._run,
                rejected_total=self.total,
                **context,
            )

    def accepted(self) -> None:
        """A good reading ends the current run of rejects."""
        if self._run:
            self._log.info("readings_resumed", device_id=self._device_id, after_rejects=self._run)
        self._run = 0


def answer_ping(
    command: Command, *, device_id: str, now: datetime, detail: str = "pong", ok: bool = True
) -> CommandResult:
    """``done`` (``failed`` when not ``ok``) with ``detail`` for ``ping``; CommandNotSupportedError otherwise."""
    if command.name != "ping":
        raise CommandNotSupportedError(f"{device_id} does not support command {command.name!r}")
    return CommandResult(
        command_id=command.command_id,
        store_id=command.store_id,
        gateway_id=command.gateway_id,
        status="done" if ok else "failed",
        detail=detail,
        ts=now,
    )
