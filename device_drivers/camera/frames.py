"""The small grey frame the analysis runs on, and full-frame geometry scaled onto it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

# What OpenCV takes and returns: uint8 frames and masks here (cv2's stubs type them loosely).
Image = npt.NDArray[Any]


class Downscaler:
    """Full BGR (or grey) frames of one size to grey frames ``width`` wide, the aspect ratio kept.

    Grey first, then INTER_AREA: converting the full frame is one fast SIMD pass, and area
    averaging on one channel is several times faster than on three (measured in bench/camera.py).
    The averaging also divides sensor noise by the scale, which is why no blur follows.
    """

    def __init__(self, *, full_width: int, full_height: int, width: int) -> None:
        self.full_size = (full_width, full_height)
        self.width = min(width, full_width)
        self.height = max(1, round(full_height * self.width / full_width))
        self.scale_x = full_width / self.width
        self.scale_y = full_height / self.height

    def __call__(self, frame: Image) -> Image:
        """The small grey frame of ``frame``."""
        grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        small: Image = cv2.resize(grey, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return small

    def polygon_mask(self, polygons: Sequence[Sequence[tuple[int, int]]]) -> Image:
        """A small-frame mask, 255 inside any of ``polygons`` (full-frame points), 0 elsewhere."""
        mask = np.zeros((self.height, self.width), np.uint8)
        for points in polygons:
            scaled = np.array([(x / self.scale_x, y / self.scale_y) for x, y in points], np.float32)
            cv2.fillPoly(mask, [np.round(scaled).astype(np.int32)], 255)
        return mask

    def to_full(self, x: float, y: float) -> tuple[float, float]:
        """A small-frame point in full-frame pixels."""
        return x * self.scale_x, y * self.scale_y

    def box_to_full(self, x: int, y: int, w: int, h: int) -> tuple[int, int, int, int]:
        """A small-frame box in full-frame pixels, clipped to the frame."""
        full_w, full_h = self.full_size
        left, top = int(x * self.scale_x), int(y * self.scale_y)
        right = min(full_w, round((x + w) * self.scale_x))
        bottom = min(full_h, round((y + h) * self.scale_y))
        return left, top, max(1, right - left), max(1, bottom - top)
