"""Counting what a driver rejected (bad frames, lines, codes, bus errors), logged without flooding the log."""

from __future__ import annotations

from collections import Counter
from typing import Any

from device_drivers.toolkit.health import HealthRecord
from storegate.logs import worth_logging


class RejectCounter:
    """Counts a driver's rejects by reason and logs the 1st, 10th, 100th... of a run (``accepted`` ends a run).

    Each reject becomes the driver's last error: ``<reason>: <detail> (rejected <total> <noun>)``.
    ``event`` names the log line, so each family's rejects are found by their own name.
    """

    def __init__(
        self,
        *,
        logger: Any,
        device_id: str,
        health: HealthRecord,
        event: str = "reading_rejected",
        noun: str = "readings",
    ) -> None:
        self._log = logger
        self._device_id = device_id
        self._health = health
        self._event = event
        self._noun = noun
        self.total = 0
        self.by_reason: Counter[str] = Counter()
        self._run = 0

    def reject(self, reason: str, detail: str, **context: object) -> None:
        """Count one reject; log it when it is the 1st, 10th, 100th... in a row."""
        self.total += 1
        self.by_reason[reason] += 1
        self._health.note(f"{reason}: {detail} (rejected {self.total} {self._noun})")
        self._run += 1
        if worth_logging(self._run):
            self._log.warning(
                self._event,
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
