"""The driver contract every family passes (tests/device_drivers/contract), run for the camera over a network
stream: an MJPEG camera on loopback whose picture has someone walking through it, so motion keeps coming.

The contract's own rig list is shared with the other families; the camera's rig lives here and the contract's
checks are imported, so they run unchanged against it. Its bad input (unusable frames) and its unplug (a stream
that stalls or goes away) have their own tests in test_driver.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from device_drivers.base import Driver
from device_drivers.camera.profile import CameraSettings
from device_drivers.camera.simulator import Clip, MjpegServer, Walker
from device_drivers.profiles import create_driver
from storegate.wire import EventKind
from tests.device_drivers.contract.rigs import Rig, shipped
from tests.device_drivers.contract.test_contract import (
    test_readings_are_of_the_family_kinds_and_payload_models,
    test_reconnect_opens_the_device_again_and_reads,
    test_start_opens_and_reads,
    test_stop_is_idempotent_reopenable_and_leaves_nothing_behind,
)

__all__ = [
    "test_readings_are_of_the_family_kinds_and_payload_models",
    "test_reconnect_opens_the_device_again_and_reads",
    "test_start_opens_and_reads",
    "test_stop_is_idempotent_reopenable_and_leaves_nothing_behind",
]

# Someone crossing the picture back and forth: motion in every pass of the looped clip.
CLIP = Clip(
    frames=30,
    width=320,
    height=240,
    walkers=[
        Walker(0, 14, (-20, 150), (340, 150), size=(30, 85)),
        Walker(15, 29, (340, 140), (-20, 140), size=(30, 85)),
    ],
)


class CameraRig(Rig):
    """A network camera's MJPEG stream on loopback (HTTP, FFmpeg on the driver's side)."""

    name = "camera"
    kinds = frozenset({EventKind.CAMERA_MOTION, EventKind.CAMERA_TAMPER, EventKind.CAMERA_RESTORED})
    profile = shipped("ip-camera-rtsp", read_timeout_s=1.0, open_timeout_s=3.0)
    server: MjpegServer | None = None

    async def plug(self) -> None:
        self.server = MjpegServer(CLIP)

    def driver(self) -> Driver:
        assert self.server is not None
        # Every frame with motion reports (no rate limit, no persistence): the contract waits for a few readings.
        settings = CameraSettings(min_area=200, motion_interval_s=0, persistence_frames=1, blur_faces=False)
        return create_driver(self.profile, self.binding(self.server.url), settings)

    async def unplug(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """The camera, plugged in."""
    async with CameraRig(tmp_path) as plugged:
        yield plugged
