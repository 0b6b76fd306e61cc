"""bench/camera.py's timed loops on a few frames: both see the walker, and the figures are frames per second."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from device_drivers.camera.profile import CameraSettings
from tests.bench.modules import bench_module


@pytest.fixture(scope="module")
def camera() -> Iterator[ModuleType]:
    with bench_module("camera") as module:
        yield module


def test_the_pipeline_and_the_bare_loop_run_on_the_same_decoded_frames(camera: ModuleType, tmp_path: Path) -> None:
    video = camera.bench_clip(40).write(tmp_path / "clip.avi")
    frames, decode_fps = camera.decode_all(video)
    assert len(frames) == 40
    assert decode_fps > 0
    assert frames[0].shape == (480, 640, 3)
    fps, motion_events = camera.pipeline_round(frames, CameraSettings(motion_interval_s=0))
    assert fps > 0
    assert motion_events > 0  # the walker is seen
    fps, moving = camera.bare_round(frames, 160, 120)
    assert fps > 0
    assert moving > 0
    assert camera.mog2_round(frames[:5], 160, 120) > 0
