#!/usr/bin/env python3
"""Camera pipeline benchmark: motion + tamper analysis against a bare frame-difference loop, on one core.

Prints, from one run on one machine:
  1. the decode rate: frames/s of cv2.VideoCapture reading the MJPG clip this script writes
     (640x480, a textured shop scene with sensor noise and a person-sized figure walking across);
  2. the pipeline rate: frames/s of the camera family's analysis (grey, downscale, running-average
     background subtraction with zones/masks/min area/persistence, and the tamper checks) over the
     decoded frames, decode excluded;
  3. the bare loop's rate over the same frames in the same run: grey, the same downscale,
     absdiff with the previous frame, threshold, contours; rounds interleaved (pipeline, bare,
     pipeline, ...) so drift on a shared machine hits both, median of the rounds, and the ratio;
  4. MOG2 (OpenCV's mixture-of-Gaussians subtractor) at the same size, for the record;
  5. RSS per camera: ``--cameras`` real camera drivers reading the clip in a loop at 15 fps
     for ``--minutes``, the process RSS printed over time (flat?) and per camera beyond the
     process without cameras.

Rates are frames per second of this thread's CPU time (``time.thread_time``), so other processes on a
shared machine do not count against either loop; the decode rate likewise.

Usage: .venv/bin/python bench/camera.py [--frames 300] [--rounds 15] [--cameras 4] [--minutes 0.5]
                                       [--motion-interval-s 10] [--json out.json]
(``--minutes 10`` for the full check.) ``cv2.setNumThreads(1)``: every figure is one core's.
Not a test: it prints figures; docs/benchmarks.md records them with this command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from device_drivers.camera.analysis import CameraAnalyzer  # noqa: E402
from device_drivers.camera.frames import Image  # noqa: E402
from device_drivers.camera.profile import CameraSettings  # noqa: E402
from device_drivers.camera.simulator import Clip, Walker  # noqa: E402

FPS = 15.0
T0 = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)
DETECTION_WIDTH = 160


def bench_clip(frames: int) -> Clip:
    """640x480 shop scene, sensor noise, a figure walking across and back."""
    half = frames // 2
    return Clip(
        frames=frames,
        fps=FPS,
        walkers=[Walker(10, half - 10, (-40, 300), (680, 300)), Walker(half, frames - 10, (680, 260), (-40, 260))],
    )


def decode_all(path: Path) -> tuple[list[Image], float]:
    """Every frame of the video at ``path``, and the frames/s it was decoded at."""
    capture = cv2.VideoCapture(str(path))
    frames: list[Image] = []
    started = time.thread_time()
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    elapsed = time.thread_time() - started
    capture.release()
    return frames, len(frames) / elapsed


def pipeline_round(frames: Sequence[Image], settings: CameraSettings) -> tuple[float, int]:
    """Frames/s of a fresh analyzer over ``frames``, and the motion events it found."""
    analyzer = CameraAnalyzer(settings)
    events = 0
    started = time.thread_time()
    for index, frame in enumerate(frames):
        t = index / FPS
        found = analyzer.process(frame, t=t, at=T0 + timedelta(seconds=t))
        events += len(found.motion)
    return len(frames) / (time.thread_time() - started), events


def bare_round(frames: Sequence[Image], width: int, height: int) -> tuple[float, int]:
    """Frames/s of the bare loop over ``frames``, and the frames with a contour."""
    previous: Image | None = None
    moving = 0
    started = time.thread_time()
    for frame in frames:
        small = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (width, height), interpolation=cv2.INTER_AREA)
        if previous is not None:
            _, mask = cv2.threshold(cv2.absdiff(small, previous), 25, 255, cv2.THRESH_BINARY)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            moving += bool(contours)
        previous = small
    return len(frames) / (time.thread_time() - started), moving


def mog2_round(frames: Sequence[Image], width: int, height: int) -> float:
    """Frames/s of the same downscale with OpenCV's MOG2 subtractor and contours."""
    subtractor = cv2.createBackgroundSubtractorMOG2(detectShadows=False)
    started = time.thread_time()
    for frame in frames:
        small = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (width, height), interpolation=cv2.INTER_AREA)
        mask = subtractor.apply(small)
        cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return len(frames) / (time.thread_time() - started)


def rss_mb() -> float:
    """This process's resident set size, MB."""
    return psutil.Process().memory_info().rss / 1e6


async def rss_run(video: Path, *, cameras: int, minutes: float, report: Callable[[str], None]) -> dict[str, Any]:
    """``cameras`` real drivers reading ``video`` in a loop at 15 fps for ``minutes``; RSS over time."""
    from device_drivers.camera.driver import CameraDriver
    from device_drivers.camera.profile import CameraProfile
    from device_drivers.ports import DeviceBinding
    from device_drivers.profiles import load_catalog

    profile = load_catalog().get("ip-camera-rtsp")
    assert isinstance(profile, CameraProfile)
    settings = CameraSettings(source=str(video), loop=True, pace_files=True, fps_cap=FPS)
    before = rss_mb()
    drivers = [
        CameraDriver(
            profile=profile, binding=DeviceBinding(device_id=f"cam-{n}", address=str(video)), settings=settings
        )
        for n in range(cameras)
    ]
    readings = 0

    async def consume(driver: CameraDriver) -> None:
        nonlocal readings
        async with driver:
            async for _ in driver.readings():
                readings += 1

    tasks = [asyncio.create_task(consume(driver)) for driver in drivers]
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    deadline = started + minutes * 60
    interval = max(5.0, minutes * 60 / 20)
    while True:
        elapsed = time.monotonic() - started
        samples.append((elapsed, rss_mb()))
        report(f"  t={elapsed:6.0f} s  RSS {samples[-1][1]:7.1f} MB  readings {readings}")
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    frames = [driver.frames_analysed for driver in drivers]
    settled = [rss for elapsed, rss in samples if elapsed >= min(30.0, minutes * 60 / 4)] or [samples[-1][1]]
    return {
        "cameras": cameras,
        "minutes": minutes,
        "rss_before_mb": round(before, 1),
        "rss_samples": [(round(e, 1), round(r, 1)) for e, r in samples],
        "rss_per_camera_mb": round((max(settled) - before) / cameras, 1),
        "rss_growth_after_warmup_mb": round(settled[-1] - settled[0], 1),
        "frames_analysed": frames,
        "readings": readings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="frames in the clip (default 300: 20 s at 15 fps)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds of each loop")
    parser.add_argument("--cameras", type=int, default=4, help="camera drivers for the RSS run (0: skip it)")
    parser.add_argument("--minutes", type=float, default=0.5, help="length of the RSS run (10 for the full check)")
    parser.add_argument(
        "--motion-interval-s", type=float, default=10.0, help="motion_interval_s (0: an event every moving frame)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not 1 <= args.frames <= 5000 or not 1 <= args.rounds <= 100 or not 0 <= args.cameras <= 64:
        parser.error("--frames 1..5000, --rounds 1..100, --cameras 0..64")
    if not 0 < args.minutes <= 60 or not 0 <= args.motion_interval_s <= 3600:
        parser.error("--minutes must be in (0, 60], --motion-interval-s in [0, 3600]")
    cv2.setNumThreads(1)
    # The settings a camera ships with (motion events rate-limited to one per zone per 10 s); the walker is in
    # the picture nine frames in ten, so motion's contours and blobs are worked out on nearly every frame.
    settings = CameraSettings(detection_width=DETECTION_WIDTH, motion_interval_s=args.motion_interval_s)
    figures: dict[str, Any] = {
        "opencv": cv2.__version__,
        "frames": args.frames,
        "motion_interval_s": args.motion_interval_s,
    }
    with tempfile.TemporaryDirectory(prefix="bench-camera-") as tmp:
        video = bench_clip(args.frames).write(Path(tmp) / "shop.avi")
        frames, decode_fps = decode_all(video)
        height, width = frames[0].shape[:2]
        small_h = round(height * DETECTION_WIDTH / width)
        pipeline: list[float] = []
        bare: list[float] = []
        motion_events = moving_frames = 0
        for _ in range(args.rounds):
            fps, motion_events = pipeline_round(frames, settings)
            pipeline.append(fps)
            fps, moving_frames = bare_round(frames, DETECTION_WIDTH, small_h)
            bare.append(fps)
        mog2 = mog2_round(frames, DETECTION_WIDTH, small_h)
        ratios = [p / b for p, b in zip(pipeline, bare, strict=True)]
        figures |= {
            "size": f"{width}x{height}",
            "detection": f"{DETECTION_WIDTH}x{small_h}",
            "decode_fps": round(decode_fps),
            "pipeline_fps_median": round(statistics.median(pipeline)),
            "bare_fps_median": round(statistics.median(bare)),
            "ratio_median": round(statistics.median(ratios), 3),
            "pipeline_fps_rounds": [round(v) for v in pipeline],
            "bare_fps_rounds": [round(v) for v in bare],
            "mog2_fps": round(mog2),
            "motion_events_per_pass": motion_events,
            "bare_moving_frames_per_pass": moving_frames,
        }
        rows = [
            ("input", f"{width}x{height}, {len(frames)} frames, detection {DETECTION_WIDTH}x{small_h}"),
            ("decode (cv2.VideoCapture, MJPG)", f"{decode_fps:,.0f} frames/s"),
            ("motion + tamper pipeline, median", f"{statistics.median(pipeline):,.0f} frames/s"),
            ("bare diff + contours, median", f"{statistics.median(bare):,.0f} frames/s"),
            ("pipeline / bare, median of rounds", f"{statistics.median(ratios):.2f}x"),
            ("MOG2 + contours (for the record)", f"{mog2:,.0f} frames/s"),
            (f"motion events per pass (interval {args.motion_interval_s:g} s)", str(motion_events)),
        ]
        for name, value in rows:
            print(f"{name:38s} {value}", flush=True)
        if args.cameras:
            print(f"RSS with {args.cameras} camera drivers, {args.minutes} min:", flush=True)
            rss = asyncio.run(
                rss_run(video, cameras=args.cameras, minutes=args.minutes, report=lambda line: print(line, flush=True))
            )
            figures["rss"] = rss
            print(f"{'RSS per camera':38s} {rss['rss_per_camera_mb']} MB", flush=True)
            print(f"{'RSS growth after warm-up':38s} {rss['rss_growth_after_warmup_mb']} MB", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
