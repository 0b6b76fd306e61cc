"""The camera driver end to end over video files OpenCV writes: readings with face-blurred JPEGs, the
snapshot and status commands, a source that ends or cannot open, and reopening without leaking."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil
import pytest

from device_drivers.base import CommandNotSupportedError, DeviceUnavailableError, DriverState
from device_drivers.camera.analysis import CameraAnalyzer, Findings
from device_drivers.camera.capture import CaptureWorker, Ended, Found, parse_source, redact
from device_drivers.camera.driver import CameraDriver
from device_drivers.camera.privacy import FaceBlurrer
from device_drivers.camera.profile import CameraProfile, CameraSettings
from device_drivers.camera.simulator import Clip, MjpegServer, Walker
from device_drivers.ports import DeviceBinding
from device_drivers.profiles import create_driver, load_catalog
from storegate.clock import SYSTEM_CLOCK
from storegate.wire import PAYLOAD_MODELS, CameraFootfall, CameraSnapshot, Command
from tests.conftest import eventually, wait_until
from tests.device_drivers.collect import collecting

DEVICE = "cam-1"


def profile() -> CameraProfile:
    found = load_catalog().get("ip-camera-rtsp")
    assert isinstance(found, CameraProfile)
    return found


def driver_for(source: Path | str, **settings: Any) -> CameraDriver:
    camera_settings = CameraSettings.model_validate({"source": str(source), **settings})
    driver = create_driver(profile(), DeviceBinding(device_id=DEVICE, address="unused"), camera_settings)
    assert isinstance(driver, CameraDriver)
    return driver


def command(name: str, **args: Any) -> Command:
    return Command(
        command_id=uuid.uuid4(),
        store_id="store-1",
        gateway_id="gw-1",
        device_id=DEVICE,
        name=name,
        args=args,
        issued_at="2026-12-06T22:00:00Z",
    )


def decoded(jpeg: bytes | None) -> Any:
    assert jpeg is not None
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None
    return picture


async def test_a_file_read_end_to_end_gives_motion_tamper_and_restored_with_stills(tmp_path: Path) -> None:
    clip = Clip(frames=120, walkers=[Walker(5, 35, (-40, 300), (680, 300))], happenings=[("covered", 60, 90)])
    video = clip.write(tmp_path / "shop.avi")
    driver = driver_for(video, pace_files=False, fps_cap=1000, motion_interval_s=1)
    async with driver, collecting(driver) as reader:
        await eventually(lambda: _true(reader.ended), what="the end of the file")
        assert isinstance(reader.error, DeviceUnavailableError)
        assert "end of file" in str(reader.error)
        assert driver.health().state is DriverState.DOWN
    kinds = [r.kind for r in reader.readings]
    assert "camera.motion" in kinds
    assert kinds.index("camera.tamper") < kinds.index("camera.restored")
    for reading in reader.readings:
        assert reading.device_id == DEVICE
        PAYLOAD_MODELS[reading.kind].model_validate(reading.payload)
        assert "snapshot_ref" not in reading.payload  # the agent's spool fills it in
        assert decoded(reading.attachment).shape == (480, 640, 3)
    tamper = next(r for r in reader.readings if r.kind == "camera.tamper")
    assert tamper.payload["reason"] == "covered"
    motion = next(r for r in reader.readings if r.kind == "camera.motion")
    assert motion.payload["boxes"]
    assert driver.health().readings_total == len(reader.readings)
    assert not [t for t in threading.enumerate() if t.name == f"camera {DEVICE}"]


async def _true(value: object) -> bool:
    return bool(value)


async def test_snapshot_command_emits_a_still_with_faces_blurred_and_status_answers(tmp_path: Path) -> None:
    video = Clip(frames=30, faces=[(320, 240, 70)]).write(tmp_path / "face.avi")
    driver = driver_for(video, loop=True)  # paced at 15 fps, and looping: a camera that stays
    async with driver, collecting(driver) as reader:
        await eventually(lambda: _true(driver.status()["frames_analysed"]), what="a frame")
        result = await driver.execute(command("snapshot", reason="shelf_pick", shelf_id="shelf-3", slot=2))
        assert result.status == "done", result.detail
        assert "1 face(s) blurred" in result.detail
        await eventually(lambda: _true(any(r.kind == "camera.snapshot" for r in reader.readings)), what="snapshot")
        snapshot = next(r for r in reader.readings if r.kind == "camera.snapshot")
        CameraSnapshot.model_validate({**snapshot.payload, "snapshot_ref": "sha256-x"})
        assert snapshot.payload == {
            "reason": "shelf_pick",
            "shelf_id": "shelf-3",
            "slot": 2,
            "faces_blurred": True,
            "width": 640,
            "height": 480,
        }
        assert FaceBlurrer().detect(decoded(snapshot.attachment)) == []

        bad = await driver.execute(command("snapshot", slot=0, colour="red"))
        assert bad.status == "rejected"
        assert "slot" in bad.detail
        assert "colour" in bad.detail
        status = json.loads((await driver.execute(command("status"))).detail)
        assert status["state"] == "up"
        assert status["source"] == str(video)
        assert status["tamper"] is None
        assert (await driver.execute(command("ping"))).status == "done"
        with pytest.raises(CommandNotSupportedError):
            await driver.execute(command("print"))
        assert reader.error is None


async def test_a_source_that_cannot_open_is_unavailable_and_leaves_no_thread(tmp_path: Path) -> None:
    driver = driver_for(tmp_path / "missing.avi", blur_faces=False)
    with pytest.raises(DeviceUnavailableError, match="cannot open"):
        await driver.__aenter__()
    assert driver.health().state is DriverState.DOWN
    assert not [t for t in threading.enumerate() if t.name == f"camera {DEVICE}"]
    result = await driver.execute(command("snapshot"))
    assert result.status == "failed"


async def test_a_stream_url_password_is_never_shown(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    url = "rtsp://admin:s3cret@127.0.0.1:1/stream2"  # loopback, nothing listens on port 1
    assert parse_source(url).kind == "stream"
    assert redact(url) == "rtsp://admin:***@127.0.0.1:1/stream2"
    driver = driver_for(url, blur_faces=False)
    with pytest.raises(DeviceUnavailableError) as raised:
        await driver.__aenter__()
    assert "s3cret" not in str(raised.value)
    assert "s3cret" not in (driver.health().last_error or "")
    assert "s3cret" not in json.dumps(driver.status())
    printed = capfd.readouterr()  # what OpenCV and FFmpeg wrote to the process's stderr themselves
    assert "127.0.0.1:1" in printed.err + printed.out + caplog.text
    assert "s3cret" not in printed.err + printed.out + caplog.text


@pytest.mark.parametrize(
    ("address", "kind"),
    [("0", "index"), ("/dev/video2", "device"), ("http://10.0.0.5/mjpg", "stream"), ("/srv/clip.avi", "file")],
)
def test_an_address_names_its_kind_of_source(address: str, kind: str) -> None:
    assert parse_source(address).kind == kind


async def test_reopening_many_times_leaves_threads_and_memory_flat(tmp_path: Path) -> None:
    video = Clip(frames=20, width=320, height=240).write(tmp_path / "small.avi")
    driver = driver_for(video, loop=True, pace_files=False, fps_cap=1000)
    process = psutil.Process()

    async def cycle() -> None:
        async with driver, collecting(driver):
            before = driver.status()["frames_analysed"]
            assert isinstance(before, int)
            await eventually(lambda: _true(driver.status()["frames_analysed"] > before + 5), what="frames")  # type: ignore[operator]

    for _ in range(5):  # warm-up: the cascade, OpenCV's buffers, asyncio's executor threads
        await cycle()
    threads, rss = threading.active_count(), process.memory_info().rss
    for _ in range(30):
        await cycle()
    assert threading.active_count() <= threads
    assert process.memory_info().rss - rss < 15_000_000  # 30 opens; a leak of a frame a cycle would show
    assert not [t for t in threading.enumerate() if t.name == f"camera {DEVICE}"]
    assert driver.health().state is DriverState.CLOSED


async def test_an_http_stream_that_stalls_or_goes_away_ends_readings_and_reopens(tmp_path: Path) -> None:
    server = MjpegServer(Clip(frames=15, width=320, height=240))
    quick = profile().model_copy(update={"read_timeout_s": 1.0, "open_timeout_s": 3.0})
    driver = CameraDriver(
        profile=quick,
        binding=DeviceBinding(device_id=DEVICE, address=server.url),
        settings=CameraSettings(blur_faces=False),
    )
    try:
        async with driver, collecting(driver) as reader:
            await eventually(lambda: _true(driver.status()["frames_analysed"]), what="frames from the stream")
            server.stall()  # the camera froze: the connection stays, no frame comes
            await eventually(lambda: _true(reader.ended), what="the stall to be noticed")
            assert isinstance(reader.error, DeviceUnavailableError)
            assert driver.health().state is DriverState.DOWN
        server.resume()
        async with driver, collecting(driver) as reader:  # the supervisor's reopen
            before = driver.status()["frames_analysed"]
            assert isinstance(before, int)
            await eventually(lambda: _true(driver.status()["frames_analysed"] > before), what="frames again")  # type: ignore[operator]
            server.close()  # the camera is gone from the network
            await eventually(lambda: _true(reader.ended), what="the loss to be noticed")
            assert isinstance(reader.error, DeviceUnavailableError)
    finally:
        server.close()
    assert not [t for t in threading.enumerate() if t.name == f"camera {DEVICE}"]


class UnusableFrames:
    """A capture whose decoder hands out frames the analysis cannot take, between good ones.

    No real decoder does that on demand, so this is the one fake: the VideoCapture's read, at the lowest layer.
    """

    def __init__(self, frames: list[Any]) -> None:
        self.frames = frames
        self.released = False

    def isOpened(self) -> bool:
        return not self.released

    def get(self, prop: int) -> float:
        return 0.0

    def set(self, prop: int, value: float) -> bool:
        return False

    def read(self) -> tuple[bool, Any]:
        if not self.frames:
            return False, None
        return True, self.frames.pop(0)

    def release(self) -> None:
        self.released = True


def test_unusable_frames_are_counted_logged_and_skipped(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    good = next(iter(Clip(frames=1, width=320, height=240)))
    frames: list[Any] = [good, np.zeros((0, 0, 3), np.uint8), good.astype(np.float32), good[:, :, :2].copy(), good]
    fake = UnusableFrames(frames)
    # A file's frames are timed by their number, not by when they were read: both good frames are analysed.
    driver = driver_for(tmp_path / "broken.avi", blur_faces=False, pace_files=False)
    delivered: list[object] = []

    class Worker(CaptureWorker):
        def _open(self) -> Any:
            return fake

    worker = Worker(
        spec=driver.spec,
        profile=driver.profile,
        settings=driver.settings,
        analyzer=CameraAnalyzer(driver.settings),
        deliver=delivered.append,
        clock=SYSTEM_CLOCK,
        name="camera test",
        rejects=driver.rejects,
    )
    with caplog.at_level(logging.WARNING):
        worker.start()
        wait_until(lambda: bool(delivered) and isinstance(delivered[-1], Ended), what="the end")
    assert worker.stop(timeout=10)
    assert worker.frames_analysed == 2  # the two good frames
    assert driver.rejects.by_reason["bad_frame"] == 3
    assert "rejected 3 frames" in (driver.health().last_error or "")
    assert fake.released
    assert any("frame_rejected" in r.getMessage() and DEVICE in r.getMessage() for r in caplog.records)


async def test_a_full_queue_drops_findings_but_never_the_sources_end(tmp_path: Path) -> None:
    driver = driver_for(tmp_path / "x.avi", blur_faces=False)
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=3)
    at = datetime(2026, 12, 6, 22, tzinfo=UTC)
    findings = [Found(Findings(), np.zeros((2, 2, 3), np.uint8), at) for _ in range(4)]
    for item in findings:
        driver._put(queue, item)
    assert driver.dropped == 1
    assert "findings dropped" in (driver.health().last_error or "")
    driver._put(queue, Ended("stream lost"))
    assert [queue.get_nowait() for _ in range(3)] == [findings[1], findings[2], Ended("stream lost")]


class HangingCapture(UnusableFrames):
    """A V4L2 device that stops delivering inside read() and never returns on its own (a wedged USB camera)."""

    def __init__(self, good: Any) -> None:
        super().__init__([good, good, good])
        self.hang = threading.Event()

    def read(self) -> tuple[bool, Any]:
        if not self.frames:
            self.hang.wait(timeout=30)  # released by the test; bounded so a failing test cannot hang the suite
            return False, None
        return super().read()


async def test_a_source_silent_inside_read_is_noticed_and_its_stuck_thread_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    good = next(iter(Clip(frames=1, width=320, height=240)))
    fake = HangingCapture(good)
    monkeypatch.setattr(CaptureWorker, "_open", lambda self: fake)
    quick = profile().model_copy(update={"read_timeout_s": 0.5})
    driver = CameraDriver(
        profile=quick,
        binding=DeviceBinding(device_id=DEVICE, address="/dev/video7"),
        settings=CameraSettings(blur_faces=False),
    )
    try:
        with caplog.at_level(logging.WARNING):
            async with driver, collecting(driver) as reader:
                await eventually(lambda: _true(reader.ended), what="the silence to be noticed")
                assert isinstance(reader.error, DeviceUnavailableError)
                assert "no frame for" in str(reader.error)
        assert any("camera_thread_stuck" in r.getMessage() for r in caplog.records)
    finally:
        fake.hang.set()
    wait_until(lambda: not [t for t in threading.enumerate() if t.name == f"camera {DEVICE}"], what="the thread")
    assert fake.released  # the thread released its capture once read() returned


def test_a_footfall_period_reported_again_after_a_reopen_carries_its_running_total() -> None:
    # The hub keeps a period's last report; a stream that dropped mid-minute must not make it forget the
    # crossings counted before the drop.
    driver = driver_for("unused.avi")
    minute = datetime(2026, 12, 6, 9, 15, tzinfo=UTC)
    before_drop = CameraFootfall(line="entrance", period_start=minute, entered=3, exited=1)
    after_reopen = CameraFootfall(line="entrance", period_start=minute, entered=2, exited=0)
    next_minute = CameraFootfall(line="entrance", period_start=minute + timedelta(minutes=1), entered=1, exited=1)
    reported = [driver._footfall_reading(period, minute).payload for period in (before_drop, after_reopen, next_minute)]
    assert [(p["entered"], p["exited"]) for p in reported] == [(3, 1), (5, 1), (1, 1)]
    assert all(p["period_start"] == reported[0]["period_start"] for p in reported[:2])


async def test_a_covered_camera_asks_for_attention_in_its_health(tmp_path: Path) -> None:
    # Covered from frame 30 to the end of a looping 13 s clip: the tamper lasts, and the agent's health says so.
    video = Clip(frames=200, happenings=[("covered", 30, 199)]).write(tmp_path / "covered.avi")
    driver = driver_for(video, loop=True)
    async with driver, collecting(driver) as reader:
        assert driver.health().attention is None

        async def attention() -> str | None:
            return driver.health().attention

        said = await eventually(attention, timeout=20, what="the covered lens in the driver's health")
        assert said == "view covered (tampered)"
        await eventually(
            lambda: _true(any(r.kind == "camera.tamper" for r in reader.readings)), what="the tamper reading too"
        )
