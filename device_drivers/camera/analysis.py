"""One camera's analysis: frames in, findings out (motion, tamper, footfall), without I/O.

Each frame is made small and grey once (:class:`~device_drivers.camera.frames.Downscaler`) and
every detector runs on that. Times: ``t`` is seconds on a clock that never steps (the video's
own time for a file, so a file is judged the same however fast it is read), ``at`` the wall
time the frame was seen (the armed schedule and the footfall minutes are wall time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from device_drivers.camera.footfall import FootfallCounter
from device_drivers.camera.frames import Downscaler, Image
from device_drivers.camera.motion import MotionDetector, MotionFinding, ZoneSpec
from device_drivers.camera.profile import CameraSettings
from device_drivers.camera.tamper import TamperChange, TamperDetector
from storegate.wire import CameraFootfall


@dataclass(frozen=True, slots=True)
class Findings:
    """What one frame brought: motion worth an event, a tamper start or end, finished footfall periods."""

    motion: list[MotionFinding] = field(default_factory=list)
    tamper: TamperChange | None = None
    footfall: list[CameraFootfall] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.motion or self.tamper or self.footfall)


NOTHING = Findings()


class CameraAnalyzer:
    """Motion, tamper and footfall of one camera, fed frame by frame (the first frame fixes the size)."""

    def __init__(self, settings: CameraSettings) -> None:
        self.settings = settings
        self.frames = 0
        self._motion: MotionDetector | None = None
        self.downscaler: Downscaler | None = None
        self.tamper = TamperDetector(sensitivity=settings.tamper_sensitivity, dark_is_tamper=settings.dark_is_tamper)
        line = settings.footfall
        self.footfall = (
            None
            if line is None
            else FootfallCounter(name=line.name, start=line.start, end=line.end, inside=line.inside)
        )
        self._armed_second: int | None = None
        self._armed = True

    def _setup(self, frame: Image) -> MotionDetector:
        height, width = frame.shape[:2]
        settings = self.settings
        self.downscaler = Downscaler(full_width=width, full_height=height, width=settings.detection_width)
        self._motion = MotionDetector(
            downscaler=self.downscaler,
            zones=[ZoneSpec(zone.name, zone.points) for zone in settings.zones],
            masks=settings.masks,
            min_area=settings.min_area,
            threshold=settings.motion_threshold,
            persistence_frames=settings.persistence_frames,
            interval_s=settings.motion_interval_s,
        )
        return self._motion

    @property
    def armed(self) -> bool:
        """Whether motion was reported at the last frame's time."""
        return self._armed

    def _is_armed(self, at: datetime) -> bool:
        second = int(at.timestamp())
        if second != self._armed_second:  # the schedule changes on minutes: once a second is plenty
            self._armed_second = second
            self._armed = self.settings.armed.is_armed(at)
        return self._armed

    def process(self, frame: Image, *, t: float, at: datetime) -> Findings:
        """Analyse one full frame; what it brought (falsy when nothing)."""
        motion = self._motion
        if motion is None or self.downscaler is None or frame.shape[:2] != self.downscaler.full_size[::-1]:
            motion = self._setup(frame)  # a camera that changed its resolution starts over
        assert self.downscaler is not None
        self.frames += 1
        small = self.downscaler(frame)
        found = motion.step(small, t=t, armed=self._is_armed(at))
        change = self.tamper.step(small, t=t)
        counted: list[CameraFootfall] = []
        if self.footfall is not None:
            to_full = self.downscaler.to_full
            counted = self.footfall.step([to_full(b.cx, b.cy) for b in motion.blobs], at=at)
        if not found and change is None and not counted:
            return NOTHING
        return Findings(motion=found, tamper=change, footfall=counted)

    def flush(self) -> list[CameraFootfall]:
        """The footfall counted since the last period ended (when the source stops)."""
        return [] if self.footfall is None else self.footfall.flush()
