"""Per-device settings of every environment sensor (the agent config's ``settings`` of such a device)."""

from __future__ import annotations

from pydantic import Field, model_validator

from device_drivers.profile_base import SettingsBase
from storegate.wire import Quantity


class ThresholdAlarm(SettingsBase):
    """A local alarm: raised when the value stays beyond a limit for ``delay_s``, cleared ``hysteresis`` inside it."""

    quantity: Quantity = Quantity.TEMPERATURE
    high: float | None = Field(default=None, description="alarm above this (e.g. 5.0 for a chiller)")
    low: float | None = Field(default=None, description="alarm below this")
    delay_s: float = Field(default=300.0, ge=0, le=86_400, description="seconds beyond the limit before raising")
    hysteresis: float = Field(default=0.5, ge=0, description="how far back inside the limit before clearing")

    @model_validator(mode="after")
    def _has_a_limit(self) -> ThresholdAlarm:
        if self.high is None and self.low is None:
            raise ValueError("an alarm needs 'high', 'low' or both")
        if self.high is not None and self.low is not None and self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class EnvironmentSettings(SettingsBase):
    """Where a sensor is, how often it is read, its local alarms and when it counts as stale."""

    zone: str | None = Field(default=None, min_length=1, max_length=64, description="e.g. 'chiller-1'")
    poll_interval_s: float = Field(default=10.0, gt=0, le=3600, description="seconds between reads (polled sensors)")
    alarms: list[ThresholdAlarm] = Field(default_factory=list, max_length=16)
    stale_after_s: float = Field(default=120.0, gt=0, description="no reading for this long: the sensor is silent")
    stuck_after_s: float = Field(
        default=1800.0, gt=0, description="the very same value for this long, with fresh timestamps: stuck"
    )
