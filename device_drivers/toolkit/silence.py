"""Counting a device's silences (no answer, no line in time): one warning when it falls silent, one line when back."""

from __future__ import annotations

from typing import Any

from device_drivers.toolkit.health import HealthRecord


class SilenceCounter:
    """Counts timeouts of a device that keeps its driver up while silent; logs transitions only.

    A silent sensor is not a failure of its driver (the environment monitor reports it stale),
    so the timeouts are counted (``timeouts_total``) and become the driver's last error.
    """

    def __init__(
        self, *, logger: Any, device_id: str, health: HealthRecord, silent_event: str, back_event: str
    ) -> None:
        self._log = logger
        self._device_id = device_id
        self._health = health
        self._silent_event = silent_event
        self._back_event = back_event
        self.timeouts_total = 0
        self._silent: bool | None = None  # None: neither heard nor missed yet

    def silent(self, detail: str, **context: object) -> None:
        """One timeout: counted, the last error, and logged when the device was not silent already."""
        self.timeouts_total += 1
        self._health.note(f"{detail} ({self.timeouts_total} timeouts)")
        if self._silent is not True:
            self._log.warning(self._silent_event, device_id=self._device_id, **context)
        self._silent = True

    def heard(self, **context: object) -> None:
        """The device said something: logged when it was silent."""
        if self._silent is True:
            self._log.info(self._back_event, device_id=self._device_id, timeouts_total=self.timeouts_total, **context)
        self._silent = False
