"""Reading frames: where a source is, and the thread that reads and analyses it.

``cv2.VideoCapture.read`` blocks (a USB camera waits for its next frame, a stream for the
network), so each open camera has one thread that reads its frames, analyses them (OpenCV
releases the GIL, so cameras run side by side) and hands what they brought to the driver's
event loop. The thread owns its VideoCapture from open to release: nothing else touches it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

import cv2
import numpy as np
import structlog

from device_drivers.camera.analysis import CameraAnalyzer, Findings
from device_drivers.camera.frames import Image
from device_drivers.camera.profile import CameraProfile, CameraSettings
from device_drivers.toolkit.rejects import RejectCounter
from storegate.clock import Clock
from storegate.wire import CameraFootfall

log = structlog.get_logger(__name__)

SourceKind = Literal["index", "device", "stream", "file"]
_STREAM: Final = re.compile(r"^(rtsps?|https?)://", re.IGNORECASE)
_USERINFO: Final = re.compile(r"^([a-z][a-z0-9+.-]*://)([^/@]*)@", re.IGNORECASE)
FILE_FPS_DEFAULT: Final = 15.0  # a file that does not say its frame rate is taken as a 15 fps camera
MAX_BAD_FRAMES: Final = 100  # unusable frames in a row before the source counts as broken


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """Where frames come from: a camera index, a V4L2 device node, a stream URL or a video file."""

    kind: SourceKind
    target: int | str

    @property
    def shown(self) -> str:
        """The source for logs and status, a URL's password left out."""
        return redact(str(self.target))


def parse_source(address: str) -> SourceSpec:
    """The source an address names: '0' (index), '/dev/video0', 'rtsp://...' / 'http(s)://...', else a file."""
    text = address.strip()
    if text.isdigit():
        return SourceSpec("index", int(text))
    if text.startswith("/dev/video"):
        return SourceSpec("device", text)
    if _STREAM.match(text):
        return SourceSpec("stream", text)
    return SourceSpec("file", text)


def usable(frame: Image | None) -> bool:
    """Whether a decoded frame is an image the analysis can take (8-bit grey or BGR, not empty)."""
    return (
        frame is not None
        and frame.size > 0
        and frame.dtype == np.uint8
        and (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3))
    )


def redact(url: str) -> str:
    """``url`` with the password of its user info replaced (rtsp://user:***@host/...)."""
    return _USERINFO.sub(lambda m: f"{m[1]}{m[2].split(':', 1)[0]}:***@" if ":" in m[2] else m[0], url)


@dataclass(frozen=True, slots=True)
class Opened:
    """The source opened (or not: ``error``)."""

    error: str | None = None
    width: int = 0
    height: int = 0


@dataclass(frozen=True, slots=True)
class Found:
    """A frame that brought findings, with the frame and when it was seen."""

    findings: Findings
    frame: Image = field(repr=False)
    at: datetime


@dataclass(frozen=True, slots=True)
class Counted:
    """Footfall counted up to the moment the source stopped."""

    footfall: list[CameraFootfall]
    at: datetime


@dataclass(frozen=True, slots=True)
class Ended:
    """The source ended or failed; the thread has released it."""

    reason: str


Item = Opened | Found | Counted | Ended


class CaptureWorker:
    """One source read and analysed in its own thread; results go to ``deliver`` (called in the thread)."""

    def __init__(
        self,
        *,
        spec: SourceSpec,
        profile: CameraProfile,
        settings: CameraSettings,
        analyzer: CameraAnalyzer,
        deliver: Callable[[Item], None],
        clock: Clock,
        name: str,
        rejects: RejectCounter | None = None,
    ) -> None:
        self.spec = spec
        self.rejects = rejects
        self.profile = profile
        self.settings = settings
        self.analyzer = analyzer
        self._deliver = deliver
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.latest: tuple[Image, datetime] | None = None  # replaced whole, so a reader sees a consistent pair
        self.frames_read = 0
        self.frames_analysed = 0
        self.last_frame_at = clock.monotonic()

    def start(self) -> None:
        """Open the source and read it, in the thread."""
        self.last_frame_at = self._clock.monotonic()
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Ask the thread to end and wait for it up to ``timeout`` s; whether it ended."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _open(self) -> cv2.VideoCapture:
        spec, profile = self.spec, self.profile
        timeouts = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(profile.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(profile.read_timeout_s * 1000),
        ]
        if spec.kind == "stream":
            return cv2.VideoCapture(str(spec.target), cv2.CAP_FFMPEG, timeouts)
        if spec.kind == "file":
            return cv2.VideoCapture(str(spec.target))
        capture = cv2.VideoCapture(spec.target, cv2.CAP_V4L2)
        if capture.isOpened():
            if profile.fourcc:
                capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*profile.fourcc))
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, profile.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, profile.height)
        return capture

    def _run(self) -> None:
        reason = "stopped"
        capture: cv2.VideoCapture | None = None
        try:
            capture = self._open()
            if not capture.isOpened():
                reason = f"cannot open {self.spec.shown}"
                self._deliver(Opened(error=reason))
                return
            width, height = capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
            self._deliver(Opened(width=int(width), height=int(height)))
            reason = self._read(capture)
            counted = self.analyzer.flush()  # the footfall of the minute so far is not lost with the stream
            if counted:
                self._deliver(Counted(counted, self._clock.now()))
        except cv2.error as err:
            reason = f"OpenCV failed on {self.spec.shown}: {err}"
        finally:
            if capture is not None:
                capture.release()
            self._deliver(Ended(reason))

    def _read(self, capture: cv2.VideoCapture) -> str:
        """Read and analyse until stopped or the source ends; why it ended."""
        is_file = self.spec.kind == "file"
        file_fps = (capture.get(cv2.CAP_PROP_FPS) or FILE_FPS_DEFAULT) if is_file else FILE_FPS_DEFAULT
        min_gap = 1.0 / self.settings.fps_cap
        played = 0.0  # video time of the file's earlier passes (loop)
        index = 0  # frames read in this pass of a file
        first_t: float | None = None
        paced_from = self._clock.monotonic()
        last_analysed: float | None = None
        bad_in_a_row = 0
        while not self._stop.is_set():
            ok, frame = capture.read()
            if ok and not usable(frame):
                # A decoder that hands out an empty or odd image (a broken stream's frame): counted, skipped.
                bad_in_a_row += 1
                if self.rejects is not None:
                    shape = None if frame is None else frame.shape
                    self.rejects.reject("bad_frame", f"unusable frame {shape}", source=self.spec.shown)
                if bad_in_a_row >= MAX_BAD_FRAMES:
                    return f"{self.spec.shown} sends no usable frames ({bad_in_a_row} in a row)"
                continue
            if not ok or frame is None:
                if is_file and self.settings.loop and index > 0:
                    played += index / file_fps
                    index = 0
                    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                return "end of file" if is_file else f"no frame from {self.spec.shown} (stream lost)"
            if bad_in_a_row and self.rejects is not None:
                self.rejects.accepted()
            bad_in_a_row = 0
            self.frames_read += 1
            self.last_frame_at = self._clock.monotonic()
            # Source time: the video's own for a file (judged the same however fast it is read), else monotonic.
            t = played + index / file_fps if is_file else self.last_frame_at
            index += 1
            if first_t is None:
                first_t = t
            if last_analysed is not None and t - last_analysed < min_gap * 0.999:
                continue
            # A paced file plays as a camera would: this frame is due (t - first_t) after the first.
            due_in = paced_from + (t - first_t) - self._clock.monotonic()
            if is_file and self.settings.pace_files and self._stop.wait(max(0.0, due_in)):
                break
            last_analysed = t
            at = self._clock.now()
            self.latest = (frame, at)
            findings = self.analyzer.process(frame, t=t, at=at)
            self.frames_analysed += 1
            if findings:
                self._deliver(Found(findings, frame, at))
        return "stopped"
