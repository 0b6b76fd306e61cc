"""The camera analysis on real video files written by OpenCV: motion, zones and masks, the armed schedule,
each tamper within 2 s and its end, footfall with known crossings, and faces blurred in stills."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time
from pathlib import Path

import cv2
import numpy as np
import pytest

from device_drivers.camera.footfall import FootfallCounter
from device_drivers.camera.frames import Image
from device_drivers.camera.privacy import FaceBlurrer, take_still
from device_drivers.camera.profile import CameraSettings, FootfallLine
from device_drivers.camera.schedule import ArmedSchedule, ArmedWindow
from device_drivers.camera.simulator import Clip, Walker, draw_face, still_scene
from tests.device_drivers.camera.clips import T0, analyse

FPS = 15.0
ACROSS = Walker(5, 50, (-40, 300), (680, 300))  # left to right through the middle, 3 s

# --------------------------------------------------------------------------- motion


def test_a_still_scene_with_sensor_noise_has_no_motion_and_no_tamper(tmp_path: Path) -> None:
    seen, analyzer = analyse(Clip(frames=60, noise=4.0), tmp_path, CameraSettings())
    assert seen == []
    assert analyzer.tamper.learnt  # the reference was learnt, so "no tamper" is a verdict, not silence


def test_a_person_crossing_is_motion_with_a_box_where_they_are(tmp_path: Path) -> None:
    seen, _ = analyse(Clip(frames=60, walkers=[ACROSS]), tmp_path, CameraSettings(motion_interval_s=1.0))
    motion = [(s.index, m) for s in seen for m in s.findings.motion]
    assert len(motion) >= 3  # rate-limited to one a second while the walk lasts 3 s
    for index, finding in motion:
        centre = ACROSS.centre(index)
        assert centre is not None
        x, y, w, h = finding.boxes[0]
        assert x <= centre[0] <= x + w, (index, centre, finding.boxes)
        assert y <= centre[1] <= y + h, (index, centre, finding.boxes)
        assert 40 <= w <= 120
        assert 100 <= h <= 200
        assert finding.zone is None
        assert 0 < finding.area_ratio < 0.2
    times = [index / FPS for index, _ in motion]
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))


def test_motion_is_reported_per_zone_and_never_in_a_mask(tmp_path: Path) -> None:
    settings = CameraSettings.model_validate(
        {
            "zones": [
                {"name": "left", "points": [[0, 0], [320, 0], [320, 480], [0, 480]]},
                {"name": "right", "points": [[320, 0], [640, 0], [640, 480], [320, 480]]},
            ],
            "masks": [[[320, 0], [640, 0], [640, 480], [320, 480]]],  # a screen on the right: ignored
            "motion_interval_s": 0.5,
        }
    )
    seen, _ = analyse(Clip(frames=60, walkers=[ACROSS]), tmp_path, settings)
    zones = {m.zone for s in seen for m in s.findings.motion}
    assert zones == {"left"}
    for s in seen:
        for m in s.findings.motion:
            assert all(x < 320 for x, _, _, _ in m.boxes)


def test_a_disarmed_camera_reports_no_motion_but_keeps_learning(tmp_path: Path) -> None:
    # Armed 21:00-07:00 Berlin time; T0 is 23:00 in Berlin: armed. At noon it is not.
    schedule = ArmedSchedule(time_zone="Europe/Berlin", windows=[ArmedWindow(start=time(21), end=time(7))])
    settings = CameraSettings(armed=schedule, motion_interval_s=1.0)
    clip = Clip(frames=60, walkers=[ACROSS])
    armed, _ = analyse(clip, tmp_path, settings)
    noon = datetime(2026, 12, 7, 11, 0, tzinfo=UTC)
    disarmed, analyzer = analyse(clip, tmp_path, settings, start=noon)
    assert any(s.findings.motion for s in armed)
    assert not any(s.findings.motion for s in disarmed)
    assert analyzer.armed is False


@pytest.mark.parametrize(
    ("at", "armed"),
    [
        pytest.param(datetime(2026, 12, 7, 5, 59, tzinfo=UTC), True, id="Mon 06:59 Berlin, from Sunday's window"),
        pytest.param(datetime(2026, 12, 7, 6, 0, tzinfo=UTC), False, id="Mon 07:00 Berlin: the window ended"),
        pytest.param(datetime(2026, 12, 5, 21, 0, tzinfo=UTC), False, id="Sat 22:00: no Saturday window"),
        pytest.param(datetime(2026, 12, 6, 5, 0, tzinfo=UTC), False, id="Sun 06:00: Saturday night is not armed"),
        pytest.param(datetime(2026, 12, 6, 20, 0, tzinfo=UTC), True, id="Sun 21:00 Berlin"),
        pytest.param(datetime(2026, 7, 5, 19, 30, tzinfo=UTC), True, id="Sun 21:30 in summer time"),
    ],
)
def test_the_armed_schedule_is_weekly_local_time_and_runs_past_midnight(at: datetime, armed: bool) -> None:
    schedule = ArmedSchedule(
        time_zone="Europe/Berlin", windows=[ArmedWindow(days=["sun", "mon"], start=time(21), end=time(7))]
    )
    assert schedule.is_armed(at) is armed
    assert ArmedSchedule().is_armed(at)  # no window: always armed


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        ArmedSchedule(time_zone="Mars/Olympus")


# --------------------------------------------------------------------------- tamper

DEADLINE_FRAMES = int(2 * FPS)  # "within 2 s" at 15 fps


@pytest.mark.parametrize("reason", ["covered", "defocused", "turned_away"])
def test_each_tamper_is_reported_within_2_s_and_restored_after(reason: str, tmp_path: Path) -> None:
    clip = Clip(frames=120, happenings=[(reason, 40, 80)])  # type: ignore[list-item]
    seen, _ = analyse(clip, tmp_path, CameraSettings())
    changes = [(s.index, s.findings.tamper) for s in seen if s.findings.tamper is not None]
    assert [(c.tampered, c.reason) for _, c in changes] == [(True, reason), (False, reason)]
    (started, _start), (ended, end) = changes
    assert 40 <= started <= 40 + DEADLINE_FRAMES
    assert 81 <= ended <= 81 + DEADLINE_FRAMES
    assert end.duration_s == pytest.approx(41 / FPS, abs=0.5)


def test_a_camera_that_starts_covered_reports_it_and_the_end_once_it_has_learnt_the_view(tmp_path: Path) -> None:
    seen, analyzer = analyse(Clip(frames=90, happenings=[("covered", 0, 30)]), tmp_path, CameraSettings())
    changes = [(s.index, s.findings.tamper) for s in seen if s.findings.tamper is not None]
    assert [(c.tampered, c.reason) for _, c in changes] == [(True, "covered"), (False, "covered")]
    assert changes[0][0] <= DEADLINE_FRAMES
    assert 31 <= changes[1][0] <= 31 + DEADLINE_FRAMES
    assert analyzer.tamper.learnt


def test_a_person_walking_close_past_is_not_a_tamper(tmp_path: Path) -> None:
    big = Walker(10, 40, (-100, 240), (740, 240), size=(200, 400))  # close to the lens, fast
    seen, _ = analyse(Clip(frames=60, walkers=[big]), tmp_path, CameraSettings())
    assert all(s.findings.tamper is None for s in seen)


def test_darkness_is_not_tamper_when_configured_so(tmp_path: Path) -> None:
    clip = Clip(frames=90, happenings=[("covered", 30, 70)])
    seen, _ = analyse(clip, tmp_path, CameraSettings(dark_is_tamper=False))
    assert all(s.findings.tamper is None for s in seen)


# --------------------------------------------------------------------------- footfall


def test_footfall_counts_known_crossings_in_and_out_per_minute(tmp_path: Path) -> None:
    line = FootfallLine(start=(320, 0), end=(320, 480), inside=(600, 240))  # the store is to the right
    walkers = [
        Walker(5, 40, (40, 300), (600, 300)),  # in
        Walker(50, 90, (600, 250), (40, 250)),  # out
        Walker(95, 130, (60, 330), (580, 330)),  # in
        Walker(140, 170, (40, 100), (250, 100)),  # comes close, never crosses
    ]
    # The clip starts 3 s (45 frames) before a minute ends: the first crossing is in it, the rest in the next.
    start = datetime(2026, 12, 6, 21, 59, 57, tzinfo=UTC)
    seen, analyzer = analyse(Clip(frames=180, walkers=walkers), tmp_path, CameraSettings(footfall=line), start=start)
    periods = [p for s in seen for p in s.findings.footfall] + analyzer.flush()
    assert [(p.period_start.minute, p.entered, p.exited) for p in periods] == [(59, 1, 0), (0, 1, 1)]
    assert all(p.line == "entrance" and p.period_s == 60 for p in periods)


def test_a_track_jittering_on_the_line_counts_once() -> None:
    counter = FootfallCounter(name="door", start=(0, 100), end=(200, 100), inside=(100, 200))
    path = [(100.0, 60.0), (100.0, 95.0), (100.0, 103.0), (100.0, 97.0), (100.0, 104.0), (100.0, 140.0)]
    path += [(100.0, 99.0), (100.0, 141.0)]  # back onto the line and off again, never on the other side
    for y_point in path:
        counter.step([y_point], at=T0)
    assert (counter.entered, counter.exited) == (1, 0)


def test_a_footfall_line_needs_two_points_and_a_side() -> None:
    with pytest.raises(ValueError, match="must not lie on the line"):
        FootfallLine(start=(0, 0), end=(10, 10), inside=(5, 5))


# --------------------------------------------------------------------------- privacy


@pytest.fixture(scope="module")
def blurrer() -> FaceBlurrer:
    return FaceBlurrer()


def decoded(jpeg: bytes) -> Image:
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None
    return picture


def test_faces_are_found_and_blurred_in_the_still(blurrer: FaceBlurrer) -> None:
    frame = still_scene(seed=3)
    draw_face(frame, (200, 240), 70)
    draw_face(frame, (470, 230), 60)
    assert len(blurrer.detect(frame)) == 2  # OpenCV's own cascade finds both drawn faces
    still = take_still(frame, blurrer=blurrer, quality=90)
    assert (still.faces_blurred, still.blurred, still.width, still.height) == (2, True, 640, 480)
    picture = decoded(still.jpeg)
    assert blurrer.detect(picture) == []  # no face left to find
    for cx, cy, size in ((200, 240, 70), (470, 230, 60)):
        eye = picture[cy - size // 4 : cy, cx - size // 2 : cx + size // 2]
        original = frame[cy - size // 4 : cy, cx - size // 2 : cx + size // 2]
        # The eyes' dark-on-light detail is gone: contrast there fell to a fraction of the drawing's.
        assert float(eye.std()) < 0.5 * float(original.std())
    far = cv2.absdiff(frame[0:120, 0:120], picture[0:120, 0:120])
    assert float(far.mean()) < 6  # away from faces the still is the frame (JPEG loss only)


def test_with_blur_off_the_still_keeps_faces(blurrer: FaceBlurrer) -> None:
    frame = still_scene(seed=3)
    draw_face(frame, (320, 240), 70)
    still = take_still(frame, blurrer=None, quality=90)
    assert (still.faces_blurred, still.blurred) == (0, False)
    picture = decoded(still.jpeg)
    assert len(blurrer.detect(picture)) == 1
