"""The smart shelf's profile (firmware_configs) and per-device settings (agent config).

The profile describes the controller model: its serial link, slot count and load-cell
limits, how the gateway judges its readings (``[calibration]``), how long it waits for
the controller (``[timing]``), and what the gateway pushes to it on attach (``[push]``).
The settings say what this particular shelf holds, from the store's planogram.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field, field_validator, model_validator

from device_drivers.profile_base import ProfileBase, ProfileModel, SerialLink, SettingsBase
from storegate.wire import SkuId

# The line protocol addresses slots 1..32 (docs/devices/shelf.md, "Limits").
MAX_SLOTS: Final = 32
MAX_SAMPLE_RATE_HZ: Final = 80  # the HX711's fast mode
MAX_FILTER_WINDOW: Final = 64
# A settle window must hold this many samples, or one noisy sample decides a settle.
MIN_SAMPLES_PER_SETTLE: Final = 3


class ShelfHardware(ProfileModel):
    """How many slots the controller has and what each slot's load cell can carry."""

    slots: int = Field(default=8, ge=1, le=MAX_SLOTS, description="load cells (one per slot)")
    capacity_g: float = Field(default=5000.0, gt=0, le=1_000_000, description="rated load of one slot's cell, g")


class ShelfCalibration(ProfileModel):
    """How the gateway turns a stream of weights into settled counts and faults."""

    settle_window_s: float = Field(
        default=1.5, gt=0, le=60, description="a reading is settled when stable for this long"
    )
    settle_tolerance_g: float = Field(
        default=5.0, gt=0, le=10_000, description="stable: highest minus lowest weight in the window at most this"
    )
    noise_g: float = Field(
        default=0.5, ge=0, le=1000, description="standard deviation of the reported weight of a cell at rest, g"
    )
    count_tolerance: float = Field(
        default=0.3,
        gt=0,
        lt=0.5,
        description="refuse to count when the weight is further than this fraction of a unit from a whole count",
    )
    stuck_s: float = Field(default=30.0, gt=0, le=86_400, description="identical raw ADC value this long: stuck")
    negative_drift_g: float = Field(
        default=25.0, gt=0, le=100_000, description="settled weight below minus this: negative drift"
    )
    out_of_range_g: float = Field(
        default=5500.0, gt=0, le=1_000_000, description="weight beyond plus or minus this for a settle window"
    )

    @model_validator(mode="after")
    def _tolerance_above_noise(self) -> ShelfCalibration:
        # The range of ~15 Gaussian samples is about 3.5 standard deviations: a tolerance
        # under 4 sigma would let noise alone keep a slot from ever settling.
        if self.settle_tolerance_g < 4 * self.noise_g:
            raise ValueError(
                f"settle_tolerance_g ({self.settle_tolerance_g}) must be at least 4 x noise_g ({self.noise_g})"
            )
        return self


class ShelfTiming(ProfileModel):
    """How long the gateway waits for the controller."""

    info_timeout_s: float = Field(default=2.0, gt=0, le=60, description="answer to INFO on attach, else unavailable")
    ack_timeout_s: float = Field(default=3.0, gt=0, le=60, description="ack of any other command")
    silence_timeout_s: float = Field(
        default=5.0, gt=0, le=600, description="no valid line for this long: the controller is gone"
    )


class ShelfPush(ProfileModel):
    """What the gateway sets on the controller when it attaches (the controller keeps these in RAM only)."""

    sample_rate_hz: int = Field(default=10, ge=1, le=MAX_SAMPLE_RATE_HZ, description="weight lines per second")
    filter_window: int = Field(default=4, ge=1, le=MAX_FILTER_WINDOW, description="moving average over N samples")


class ShelfProfile(ProfileBase):
    """A shelf controller: one load cell per slot behind the Storegate shelf line protocol."""

    kind: Literal["shelf"]
    serial: SerialLink = Field(default_factory=SerialLink)
    shelf: ShelfHardware = Field(default_factory=ShelfHardware)
    calibration: ShelfCalibration = Field(default_factory=ShelfCalibration)
    timing: ShelfTiming = Field(default_factory=ShelfTiming)
    push: ShelfPush = Field(default_factory=ShelfPush)

    @model_validator(mode="after")
    def _consistent(self) -> ShelfProfile:
        if self.calibration.out_of_range_g < self.shelf.capacity_g:
            raise ValueError(
                f"calibration.out_of_range_g ({self.calibration.out_of_range_g}) must be at least "
                f"shelf.capacity_g ({self.shelf.capacity_g})"
            )
        samples = self.calibration.settle_window_s * self.push.sample_rate_hz
        if samples < MIN_SAMPLES_PER_SETTLE:
            raise ValueError(
                f"calibration.settle_window_s x push.sample_rate_hz is {samples:g} samples; "
                f"at least {MIN_SAMPLES_PER_SETTLE} are needed"
            )
        if self.timing.silence_timeout_s * self.push.sample_rate_hz < 2:
            raise ValueError("timing.silence_timeout_s must cover at least two weight lines")
        return self


class SlotAssignment(SettingsBase):
    """What one slot holds: a SKU and the weight of one item (without it the slot reports weight, not counts)."""

    # The wire's SkuId: an id its shelf events could not carry is refused here, when the config is read.
    sku: SkuId | None = Field(default=None, description="the planogram's SKU")
    unit_weight_g: float | None = Field(default=None, gt=0, le=1_000_000, description="weight of one item, g")


class ShelfSettings(SettingsBase):
    """Which SKU each slot holds, set per shelf by the store's planogram."""

    slots: dict[int, SlotAssignment] = Field(
        default_factory=dict, description="slot number (1-based) -> what it holds; TOML keys are strings: '1'"
    )
    stock_interval_s: float = Field(default=300.0, gt=0, le=86_400, description="seconds between shelf.stock reports")
    settle_window_s: float | None = Field(default=None, gt=0, le=60, description="overrides the profile's")
    settle_tolerance_g: float | None = Field(default=None, gt=0, le=10_000, description="overrides the profile's")

    @field_validator("slots")
    @classmethod
    def _slot_numbers(cls, value: dict[int, SlotAssignment]) -> dict[int, SlotAssignment]:
        bad = sorted(slot for slot in value if not 1 <= slot <= MAX_SLOTS)
        if bad:
            raise ValueError(f"slot numbers run from 1 to {MAX_SLOTS}; got {bad}")
        return value
