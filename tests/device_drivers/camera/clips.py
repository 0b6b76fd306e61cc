"""Clips for the camera tests: written by OpenCV to a real file, read back with cv2.VideoCapture."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2

from device_drivers.camera.analysis import CameraAnalyzer, Findings
from device_drivers.camera.frames import Image
from device_drivers.camera.profile import CameraSettings
from device_drivers.camera.simulator import Clip

# A Sunday night, 22:00 UTC.
T0 = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)


def read_video(path: Path) -> list[Image]:
    """Every frame of a video file, decoded by OpenCV."""
    capture = cv2.VideoCapture(str(path))
    frames: list[Image] = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    assert frames, f"OpenCV read no frame of {path}"
    return frames


@dataclass(frozen=True, slots=True)
class Seen:
    """Findings of one frame, with its index and video time."""

    index: int
    t: float
    findings: Findings


def analyse(
    clip: Clip, tmp_path: Path, settings: CameraSettings, *, start: datetime = T0
) -> tuple[list[Seen], CameraAnalyzer]:
    """Write ``clip`` as a video, read it back, and run a fresh analyzer over it (video time)."""
    frames = read_video(clip.write(tmp_path / "clip.avi"))
    analyzer = CameraAnalyzer(settings)
    seen: list[Seen] = []
    for index, frame in enumerate(frames):
        t = index / clip.fps
        found = analyzer.process(frame, t=t, at=start + timedelta(seconds=t))
        if found:
            seen.append(Seen(index, t, found))
    return seen, analyzer
