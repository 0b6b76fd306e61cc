"""Privacy: faces blurred before a still leaves the gateway, and the JPEG it is sent as.

The detector is the frontal-face Haar cascade that ships with OpenCV (``cv2.data``): no model
is downloaded, and it runs on the Pi in tens of milliseconds per still (stills are rare:
motion events are rate-limited). Each face box is enlarged by a fifth (a cascade box is tight
around eyes and mouth; hair and ears identify too), pixelated to a few blocks and blurred, so
nothing of the face can be recovered from the JPEG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import cv2
import numpy as np

from device_drivers.camera.frames import Image

CASCADE: Final = "haarcascade_frontalface_default.xml"
ENLARGE: Final = 0.2
BLOCKS: Final = 6  # pixel blocks across a blurred face


@dataclass(frozen=True, slots=True)
class Still:
    """A JPEG of a frame and what was done to it."""

    jpeg: bytes
    width: int
    height: int
    faces_blurred: int
    blurred: bool  # whether faces were looked for (and any found blurred)


class FaceBlurrer:
    """Finds faces with OpenCV's Haar cascade and blurs them in place."""

    def __init__(self, *, min_face_px: int = 24) -> None:
        path = Path(cv2.data.haarcascades) / CASCADE  # type: ignore[attr-defined]  # untyped in cv2's stubs
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise RuntimeError(f"cannot load the face detector {path}")
        self.min_face_px = min_face_px

    def detect(self, frame: Image) -> list[tuple[int, int, int, int]]:
        """Face boxes (x, y, w, h) in ``frame``'s pixels."""
        grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        grey = cv2.equalizeHist(grey)  # the cascade was trained on equalised faces; dim shops need it
        found = self._cascade.detectMultiScale(
            grey, scaleFactor=1.1, minNeighbors=4, minSize=(self.min_face_px, self.min_face_px)
        )
        return [(int(x), int(y), int(w), int(h)) for x, y, w, h in found]

    def blur(self, frame: Image) -> list[tuple[int, int, int, int]]:
        """Blur every face of ``frame`` in place; the enlarged boxes blurred."""
        height, width = frame.shape[:2]
        boxes: list[tuple[int, int, int, int]] = []
        for x, y, w, h in self.detect(frame):
            dx, dy = int(w * ENLARGE / 2), int(h * ENLARGE / 2)
            left, top = max(0, x - dx), max(0, y - dy)
            right, bottom = min(width, x + w + dx), min(height, y + h + dy)
            blur_region(frame, left, top, right - left, bottom - top)
            boxes.append((left, top, right - left, bottom - top))
        return boxes


def blur_region(frame: Image, x: int, y: int, w: int, h: int) -> None:
    """Pixelate and blur one box of ``frame`` in place beyond recognition."""
    region = frame[y : y + h, x : x + w]
    if region.size == 0:
        return
    blocks = cv2.resize(region, (BLOCKS, max(1, BLOCKS * h // max(w, 1))), interpolation=cv2.INTER_AREA)
    coarse = cv2.resize(blocks, (w, h), interpolation=cv2.INTER_NEAREST)
    kernel = max(3, (min(w, h) // 4) | 1)
    region[:] = cv2.GaussianBlur(coarse, (kernel, kernel), 0)


def take_still(frame: Image, *, blurrer: FaceBlurrer | None, quality: int) -> Still:
    """A JPEG of ``frame`` (the frame itself untouched), faces blurred when ``blurrer`` is given."""
    picture = np.array(frame, copy=True)
    faces = blurrer.blur(picture) if blurrer is not None else []
    ok, encoded = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("the frame could not be encoded as JPEG")
    height, width = picture.shape[:2]
    return Still(
        jpeg=encoded.tobytes(), width=width, height=height, faces_blurred=len(faces), blurred=blurrer is not None
    )
