"""Motion: background subtraction on the small grey frame, with zones, masks, minimum area and persistence.

The background is a running average (``cv2.accumulateWeighted``) and the foreground is what
differs from it by more than ``threshold`` grey levels: an order of magnitude cheaper than
MOG2 at the same detection size (bench/camera.py), and sensor noise is already averaged away
by the downscale. A change over most of the frame (lights switched on, the lens covered) is
not motion: the background is taken anew from that frame and the tamper checks judge it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np

from device_drivers.camera.frames import Downscaler, Image

# The background forgets at this rate per update: a still object is part of the scene after a few seconds.
BACKGROUND_ALPHA: Final = 0.1
# It is updated every this many frames: the scene changes slowly, and the update (and the 8-bit copy the
# difference is taken against) is a fifth of the analysis' cost (bench/camera.py).
BACKGROUND_EVERY: Final = 2
# A foreground over this share of the frame is a scene change (lights, a covered lens), not something moving.
SCENE_CHANGE_SHARE: Final = 0.5
MAX_BOXES: Final = 32


@dataclass(frozen=True, slots=True)
class Blob:
    """One moving region: its box in small-frame pixels, its centroid and its area."""

    x: int
    y: int
    w: int
    h: int
    cx: float
    cy: float
    area: float


@dataclass(frozen=True, slots=True)
class MotionFinding:
    """Motion in one zone worth an event: boxes in full-frame pixels (largest first), the moving share."""

    zone: str | None
    boxes: tuple[tuple[int, int, int, int], ...]
    area_ratio: float


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    """A zone by name and its full-frame polygon (None: the whole frame)."""

    name: str | None
    points: Sequence[tuple[int, int]] | None


class _ZoneState:
    def __init__(self, spec: ZoneSpec, mask: Image | None, pixels: int) -> None:
        self.name = spec.name
        self.mask = mask
        self.pixels = max(1, pixels)
        self.streak = 0
        self.last_event_t: float | None = None


class MotionDetector:
    """Background subtraction per small frame; :meth:`step` returns the findings worth an event."""

    def __init__(
        self,
        *,
        downscaler: Downscaler,
        zones: Sequence[ZoneSpec] = (),
        masks: Sequence[Sequence[tuple[int, int]]] = (),
        min_area: int = 1500,
        threshold: int = 25,
        persistence_frames: int = 3,
        interval_s: float = 10.0,
    ) -> None:
        self.downscaler = downscaler
        small_pixels = downscaler.scale_x * downscaler.scale_y
        self.min_area_small = min_area / small_pixels
        self.threshold = threshold
        self.persistence_frames = persistence_frames
        self.interval_s = interval_s
        height, width = downscaler.height, downscaler.width
        self._watched: Image | None = None
        if masks:
            self._watched = cv2.bitwise_not(downscaler.polygon_mask(masks))
        self._zones: list[_ZoneState] = []
        for spec in zones or (ZoneSpec(None, None),):
            zone_mask = None if spec.points is None else downscaler.polygon_mask([spec.points])
            if zone_mask is not None and self._watched is not None:
                zone_mask = cv2.bitwise_and(zone_mask, self._watched)
            pixels = width * height if zone_mask is None else cv2.countNonZero(zone_mask)
            if zone_mask is None and self._watched is not None:
                pixels = cv2.countNonZero(self._watched)
            self._zones.append(_ZoneState(spec, zone_mask, pixels))
        self._background: np.ndarray | None = None  # float32, the running average
        self._background8: Image | None = None  # its 8-bit copy, what each frame is compared with
        self._frames = 0
        self._kernel = np.ones((3, 3), np.uint8)
        self.foreground: Image = np.zeros((height, width), np.uint8)
        self.blobs: list[Blob] = []
        self.scene_changes = 0

    def step(self, small: Image, *, t: float, armed: bool) -> list[MotionFinding]:
        """Feed one small grey frame seen at ``t`` (seconds); the zones' findings due now (none when disarmed)."""
        self._frames += 1
        if self._background is None or self._background8 is None:
            self._reset(small)
            self.blobs = []
            return []
        diff = cv2.absdiff(small, self._background8)
        if self._frames % BACKGROUND_EVERY == 0:
            cv2.accumulateWeighted(small, self._background, BACKGROUND_ALPHA)
            self._background8 = cv2.convertScaleAbs(self._background)
        _, foreground = cv2.threshold(diff, self.threshold, 255, cv2.THRESH_BINARY)
        if self._watched is not None:
            foreground = cv2.bitwise_and(foreground, self._watched)
        moving = cv2.countNonZero(foreground)
        if moving == 0:
            return self._quiet()
        if moving > SCENE_CHANGE_SHARE * foreground.size:
            self._reset(small)
            self.scene_changes += 1
            return self._quiet()
        foreground = cv2.dilate(foreground, self._kernel)
        self.foreground = foreground
        contours, _ = cv2.findContours(foreground, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        blobs: list[Blob] = []
        for contour in contours:
            moments = cv2.moments(contour)
            area = moments["m00"]
            if area < self.min_area_small:
                continue
            x, y, w, h = cv2.boundingRect(contour)
            blobs.append(Blob(x, y, w, h, moments["m10"] / area, moments["m01"] / area, area))
        blobs.sort(key=lambda blob: blob.area, reverse=True)
        self.blobs = blobs
        return self._zone_findings(blobs, foreground, t=t, armed=armed)

    def _reset(self, small: Image) -> None:
        self._background = small.astype(np.float32)
        self._background8 = small.copy()

    def _quiet(self) -> list[MotionFinding]:
        self.blobs = []
        for zone in self._zones:
            zone.streak = 0
        return []

    def _zone_findings(self, blobs: list[Blob], foreground: Image, *, t: float, armed: bool) -> list[MotionFinding]:
        findings: list[MotionFinding] = []
        for zone in self._zones:
            mask = zone.mask
            inside = [b for b in blobs if mask is None or mask[int(b.cy), int(b.cx)]]
            if not inside:
                zone.streak = 0
                continue
            zone.streak += 1
            if zone.streak < self.persistence_frames or not armed:
                continue
            if zone.last_event_t is not None and t - zone.last_event_t < self.interval_s:
                continue
            zone.last_event_t = t
            in_zone = foreground if mask is None else cv2.bitwise_and(foreground, mask)
            ratio = min(1.0, cv2.countNonZero(in_zone) / zone.pixels)
            boxes = tuple(self.downscaler.box_to_full(b.x, b.y, b.w, b.h) for b in inside[:MAX_BOXES])
            findings.append(MotionFinding(zone=zone.name, boxes=boxes, area_ratio=round(ratio, 4)))
        return findings
