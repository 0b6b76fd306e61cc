"""Cameras' profiles (firmware_configs) and per-device settings (agent config).

Every coordinate in the settings (zones, masks, the footfall line) is in the pixels of the full
frame the camera delivers (origin top left), so a technician reads them off a snapshot; the
analysis scales them to its small detection frame itself.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from device_drivers.camera.schedule import ArmedSchedule
from device_drivers.profile_base import ProfileBase, ProfileModel, SettingsBase

Point = Annotated[tuple[int, int], Field(description="(x, y) in full-frame pixels")]
Polygon = Annotated[list[Point], Field(min_length=3, max_length=64)]

TamperSensitivity = Literal["low", "medium", "high"]


class CameraProfile(ProfileBase):
    """A camera model: how to open it and what to ask of it."""

    kind: Literal["camera"]
    transport: Literal["v4l2", "stream"] = Field(
        description="v4l2: a USB (UVC) camera at /dev/video* or an index; stream: an RTSP/HTTP URL or a video file"
    )
    v4l_any: bool = Field(
        default=False, description="hot-plug gives this profile to any V4L2 capture node no other profile matches"
    )
    width: int = Field(default=640, ge=160, le=4096, description="v4l2: frame width to ask the camera for")
    height: int = Field(default=480, ge=120, le=4096, description="v4l2: frame height to ask the camera for")
    fourcc: str | None = Field(
        default="MJPG",
        min_length=4,
        max_length=4,
        description="v4l2: pixel format to ask for (MJPG: less USB bandwidth)",
    )
    open_timeout_s: float = Field(default=10.0, gt=0, le=120, description="give up opening after this long")
    read_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="a source that delivers no frame for this long is lost"
    )


class Zone(ProfileModel):
    """A named area motion is reported for."""

    name: str = Field(min_length=1, max_length=64, description="e.g. 'back-door'")
    points: Polygon


class FootfallLine(ProfileModel):
    """A counting line: people whose track crosses it are counted, in or out by the side they end on."""

    name: str = Field(default="entrance", min_length=1, max_length=64)
    start: Point
    end: Point
    inside: Point = Field(description="any point on the store's side of the line: ending there is 'entered'")

    @model_validator(mode="after")
    def _a_line_with_sides(self) -> FootfallLine:
        (x1, y1), (x2, y2), (px, py) = self.start, self.end, self.inside
        if (x1, y1) == (x2, y2):
            raise ValueError("start and end must differ")
        if (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1) == 0:
            raise ValueError("'inside' must not lie on the line")
        return self


class CameraSettings(SettingsBase):
    """What one camera watches and reports; every field has a default."""

    source: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="overrides the device's address: a camera index ('0'), '/dev/video0', an rtsp:// or http(s):// "
        "URL, or a video file",
    )
    loop: bool = Field(default=False, description="a video file starts again at its end instead of ending")
    pace_files: bool = Field(
        default=True, description="a video file plays at its own frame rate, as a camera would (false: at once)"
    )
    fps_cap: float = Field(default=15.0, gt=0, le=1000, description="frames analysed a second of source time, at most")
    detection_width: int = Field(
        default=160, ge=80, le=640, description="width of the grey frame motion and tamper run on (height follows)"
    )
    zones: list[Zone] = Field(default_factory=list, max_length=16, description="none: the whole frame, unnamed")
    masks: list[Polygon] = Field(
        default_factory=list, max_length=16, description="areas never watched for motion (a clock, a screen)"
    )
    min_area: int = Field(default=1500, ge=1, description="a moving blob counts from this many full-frame pixels")
    motion_threshold: int = Field(default=25, ge=1, le=255, description="grey-level change a pixel must exceed")
    persistence_frames: int = Field(default=3, ge=1, le=100, description="analysed frames in a row motion must hold")
    motion_interval_s: float = Field(
        default=10.0, ge=0, le=3600, description="one motion event per zone per this many seconds while it lasts"
    )
    armed: ArmedSchedule = Field(default_factory=ArmedSchedule, description="when motion is reported (default: always)")
    tamper_sensitivity: TamperSensitivity = "medium"
    dark_is_tamper: bool = Field(
        default=True,
        description="a black view counts as 'covered' (false for a camera without infrared in a store that "
        "switches its lights off: darkness is then not reported, and tamper checks pause while it lasts)",
    )
    blur_faces: bool = Field(default=True, description="faces are blurred in every snapshot before it is stored")
    jpeg_quality: int = Field(default=80, ge=10, le=100)
    footfall: FootfallLine | None = Field(default=None, description="count people crossing this line, per minute")
    watches_shelves: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=256, description="shelves in view: the agent snapshots a pick on them"
    )
