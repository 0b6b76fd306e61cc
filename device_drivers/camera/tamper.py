"""Tamper: a covered or blacked-out lens, a defocused or sprayed one, a camera turned away from its scene.

Three measures of the small grey frame against a reference learnt from its first half second that
shows something, then followed slowly while the view is healthy:

- covered: the mean brightness is near black, or the contrast (standard deviation) has fallen
  to a small share of the reference's: a hand, tape, a cap, a sprayed-over lens in light;
- defocused: the sharpness (variance of the Laplacian) has fallen far below the reference's
  while contrast remains: the lens turned out of focus, smeared or sprayed with something clear;
- turned_away: at least 11 of the 16 blocks of a 32x24 thumbnail no longer correlate with the
  same blocks of the reference (normalised cross-correlation, so dimmer or brighter light alone does
  not count, and a person close to the lens, who fills a column or two of blocks, does not either).

A reason must hold ``confirm_s`` of frame time before ``tamper`` is reported, and its absence as
long before ``restored``: a person walking past the lens is not a tamper. The costlier measures
(sharpness, the thumbnail) run every ``SLOW_EVERY_S`` of frame time and the cheap ones every
``FAST_EVERY_S``, whatever the frame rate: well inside the 2 s deadline, at a small share of the cost.
The reference stops learning while a tamper lasts, so a view moved for good stays reported until
the driver is opened again (which learns the new view) or the camera is put back.

A black view is ``covered`` by default whatever blacked it out; ``dark_is_tamper = false`` is for
a camera without infrared in a store that switches off its lights: darkness then is not reported
and every check pauses while it lasts (nothing can be judged in the dark).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import cv2
import numpy as np

from device_drivers.camera.frames import Image

TamperReason = Literal["covered", "defocused", "turned_away"]

FAST_EVERY_S: Final = 0.1  # brightness and contrast: every other frame at 15 fps
SLOW_EVERY_S: Final = 0.4  # sharpness and the thumbnail: confirm_s + 0.4 s stays well under 2 s
# 32x24 is a fifth of the 160x120 detection frame: an integer ratio is INTER_AREA's fast path (10x cheaper).
THUMB_SIZE: Final = (32, 24)
GRID: Final = 4  # the thumbnail is compared block by block, 4 x 4 (8x6 pixels each)
TURNED_BLOCKS: Final = 11  # blocks that must decorrelate for "turned away": a person near the lens fills fewer
LEARN_EVERY: Final = 4  # the reference learns at every 4th healthy slow check (its blocks are then renormalised)
WARMUP_FRAMES: Final = 5  # checks (0.1 s apart) the first reference is averaged over
LEARN_ALPHA: Final = 0.08  # the reference follows a healthy view at this rate per learning check


@dataclass(frozen=True, slots=True)
class TamperLimits:
    """The limits of one sensitivity."""

    dark_mean: float  # mean grey level at or below which the view is black
    flat_share: float  # contrast below this share of the reference's is a covered lens
    sharp_share: float  # sharpness below this share of the reference's is a defocused lens
    min_correlation: float  # thumbnail correlation below this is a view turned away


SENSITIVITY: Final[dict[str, TamperLimits]] = {
    "low": TamperLimits(dark_mean=12, flat_share=0.15, sharp_share=0.1, min_correlation=0.3),
    "medium": TamperLimits(dark_mean=20, flat_share=0.25, sharp_share=0.2, min_correlation=0.45),
    "high": TamperLimits(dark_mean=30, flat_share=0.35, sharp_share=0.3, min_correlation=0.6),
}


@dataclass(frozen=True, slots=True)
class TamperChange:
    """A tamper that started (``tampered``) or ended; ``score`` is the measure that crossed its limit."""

    tampered: bool
    reason: TamperReason
    score: float
    duration_s: float | None = None  # for an end: how long it lasted


def _thumbnail(small: Image) -> np.ndarray:
    thumb: np.ndarray = cv2.resize(small, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    return thumb


def _blocks(thumb: np.ndarray) -> np.ndarray:
    """The thumbnail's GRID x GRID blocks, each centred and scaled to unit length (a flat block stays zero)."""
    rows, cols = THUMB_SIZE[1] // GRID, THUMB_SIZE[0] // GRID
    blocks = thumb.reshape(GRID, rows, GRID, cols).transpose(0, 2, 1, 3).reshape(GRID * GRID, rows * cols)
    blocks = blocks - blocks.mean(axis=1, keepdims=True)
    return np.asarray(blocks / np.maximum(np.linalg.norm(blocks, axis=1, keepdims=True), 1e-3))


def _sharpness(small: Image) -> float:
    # On the frame halved (an integer ratio again): a quarter of the pixels, and sensor noise, which the
    # Laplacian amplifies, averaged down once more; the ratio to the reference is what is judged.
    height, width = small.shape[:2]
    half = cv2.resize(small, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    _, std = cv2.meanStdDev(cv2.Laplacian(half, cv2.CV_16S))
    return float(std[0, 0]) ** 2


class TamperDetector:
    """Judges each small grey frame against the learnt reference; :meth:`step` returns a start or an end."""

    def __init__(self, *, sensitivity: str = "medium", confirm_s: float = 0.6, dark_is_tamper: bool = True) -> None:
        self.limits = SENSITIVITY[sensitivity]
        self.confirm_s = confirm_s
        self.dark_is_tamper = dark_is_tamper
        self.active: TamperChange | None = None
        self._since: float | None = None  # when the current candidate (or its absence, while active) started
        self._candidate: tuple[TamperReason, float] | None = None
        self._last_check = -math.inf
        self._last_slow = -math.inf
        self._ref_std = 0.0
        self._ref_sharp = 0.0
        self._ref_thumb: np.ndarray | None = None
        self._ref_blocks: np.ndarray | None = None  # the reference's blocks, normalised (see _blocks)
        self._healthy_checks = 0
        self._warm: list[tuple[float, float, np.ndarray]] = []
        self._slow: tuple[TamperReason, float] | None = None  # the last slow check's verdict
        self.started_at: float | None = None

    @property
    def learnt(self) -> bool:
        """Whether the reference scene is learnt (no verdict before)."""
        return self._ref_thumb is not None

    def step(self, small: Image, *, t: float) -> TamperChange | None:
        """Feed one small grey frame seen at ``t`` (seconds); the change it confirms, if any."""
        if self._last_check <= t < self._last_check + FAST_EVERY_S:
            return None  # (a time before the last check is a clock that stepped back: check now)
        self._last_check = t
        mean_m, std_m = cv2.meanStdDev(small)
        mean, std = float(mean_m[0, 0]), float(std_m[0, 0])
        if self._ref_thumb is None:
            if mean <= self.limits.dark_mean and self.dark_is_tamper:
                # A camera that opens covered has no reference yet, but black needs none.
                return self._confirm(("covered", round(mean, 2)), t=t)
            self._warm_up(small, std)
            return None
        slow = not self._last_slow <= t < self._last_slow + SLOW_EVERY_S
        if slow:
            self._last_slow = t
        verdict = self._judge(small, mean=mean, std=std, slow=slow)
        return self._confirm(verdict, t=t)

    def _warm_up(self, small: Image, std: float) -> None:
        if float(np.mean(small)) <= self.limits.dark_mean:
            return  # a reference is learnt from a view that shows something
        self._warm.append((std, _sharpness(small), _thumbnail(small)))
        if len(self._warm) >= WARMUP_FRAMES:
            self._ref_std = float(np.mean([w[0] for w in self._warm]))
            self._ref_sharp = float(np.mean([w[1] for w in self._warm]))
            self._ref_thumb = np.mean([w[2] for w in self._warm], axis=0).astype(np.float32)
            self._warm = []

    def _judge(
        self, small: Image, *, mean: float, std: float, slow: bool
    ) -> tuple[TamperReason, float] | Literal["dark"] | None:
        limits = self.limits
        if mean <= limits.dark_mean:
            return ("covered", round(mean, 2)) if self.dark_is_tamper else "dark"
        if std < limits.flat_share * self._ref_std:
            return "covered", round(std / max(self._ref_std, 1e-6), 4)
        if not slow:
            # Between slow checks the last one's verdict stands while it matters (a tamper or its candidate).
            return self._slow if self.active is not None or self._candidate is not None else None
        sharp = _sharpness(small)
        sharp_share = sharp / max(self._ref_sharp, 1e-6)
        thumb = _thumbnail(small)
        assert self._ref_thumb is not None
        if self._ref_blocks is None:
            self._ref_blocks = _blocks(self._ref_thumb)
        by_block = np.sort(np.einsum("ij,ij->i", _blocks(thumb), self._ref_blocks))
        correlation = float(by_block[TURNED_BLOCKS - 1])  # TURNED_BLOCKS blocks are at or below it
        verdict: tuple[TamperReason, float] | None = None
        if sharp_share < limits.sharp_share:
            verdict = ("defocused", round(sharp_share, 4))
        elif correlation < limits.min_correlation:
            verdict = ("turned_away", round(correlation, 4))
        elif self.active is None and self._candidate is None and self._healthy_checks % LEARN_EVERY == 0:
            # A healthy view: the reference follows it slowly (daylight, a shelf restocked).
            self._ref_std += LEARN_ALPHA * (std - self._ref_std)
            self._ref_sharp += LEARN_ALPHA * (sharp - self._ref_sharp)
            self._ref_thumb = (1 - LEARN_ALPHA) * self._ref_thumb + LEARN_ALPHA * thumb
            self._ref_blocks = None
        if verdict is None:
            self._healthy_checks += 1
        self._slow = verdict
        return verdict

    def _confirm(
        self, verdict: tuple[TamperReason, float] | Literal["dark"] | None, *, t: float
    ) -> TamperChange | None:
        if verdict == "dark":
            return None  # nothing can be judged in the dark: neither a start nor an end
        if self.active is None:
            if verdict is None:
                self._candidate, self._since = None, None
                return None
            if self._candidate is None or self._candidate[0] != verdict[0]:
                self._candidate, self._since = verdict, t
            if self._since is not None and t - self._since >= self.confirm_s:
                self.active = TamperChange(tampered=True, reason=verdict[0], score=verdict[1])
                self.started_at, self._candidate, self._since = self._since, None, None
                return self.active
            return None
        if verdict is not None:
            self._since = None
            return None
        if self._since is None:
            self._since = t
        if t - self._since < self.confirm_s:
            return None
        ended = self.active
        duration = max(0.0, self._since - (self.started_at or self._since))
        self.active, self._since, self._slow = None, None, None
        return TamperChange(tampered=False, reason=ended.reason, score=ended.score, duration_s=round(duration, 3))
