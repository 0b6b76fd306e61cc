"""The camera driver: a source read in its thread, its findings turned into readings with a JPEG still.

Addresses (``binding.address``, or the ``source`` setting, which overrides it): a camera index
(``0``), a V4L2 node (``/dev/video0``), an ``rtsp://`` / ``http(s)://`` stream, or a video file
(``loop`` to play it again at its end).

Readings: ``camera.motion`` (boxes, zone, moving share), ``camera.tamper`` / ``camera.restored``
(reason, score, how long), each with a JPEG of the frame as ``attachment``, faces blurred unless
``blur_faces`` is off; ``camera.footfall`` per minute with a counting line; and ``camera.snapshot``
for a ``snapshot`` command. ``snapshot_ref`` is left out: the agent stores the attachment in its
snapshot spool and fills it in. A source that ends, fails or stays silent for the profile's
``read_timeout_s`` ends ``readings()`` with DeviceUnavailableError; the capture is released and
its thread joined on every close, so the supervisor can reopen it as often as it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Final, Literal, Self

import structlog
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from device_drivers.base import (
    CommandNotSupportedError,
    DeviceUnavailableError,
    Driver,
    DriverError,
    DriverHealth,
    Reading,
)
from device_drivers.camera.analysis import CameraAnalyzer
from device_drivers.camera.capture import CaptureWorker, Counted, Ended, Found, Item, Opened, parse_source
from device_drivers.camera.frames import Image
from device_drivers.camera.privacy import FaceBlurrer, Still, take_still
from device_drivers.camera.profile import CameraProfile, CameraSettings
from device_drivers.ports import DeviceBinding
from device_drivers.toolkit.commands import answer_ping, command_result
from device_drivers.toolkit.health import HealthRecord
from device_drivers.toolkit.rejects import RejectCounter
from storegate.clock import SYSTEM_CLOCK, Clock
from storegate.wire import (
    CameraBox,
    CameraFootfall,
    CameraMotion,
    CameraRestored,
    CameraSnapshot,
    CameraTamper,
    Command,
    CommandResult,
    EventKind,
)

log = structlog.get_logger(__name__)

# Findings and stills waiting for readings(): far more than a camera makes while its consumer is busy.
_QUEUE: Final = 256
# Footfall periods whose running totals are kept (per line): a reopen reports at most the last one or two again.
_FOOTFALL_PERIODS_KEPT: Final = 16
_HEARTBEAT_S: Final = 0.5  # how often readings() looks whether the source went silent


class SnapshotArgs(BaseModel):
    """The ``snapshot`` command's arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: Literal["motion", "tamper", "shelf_pick", "requested"] = "requested"
    shelf_id: str | None = Field(default=None, min_length=1, max_length=64)
    slot: int | None = Field(default=None, ge=1, le=255)


class CameraDriver:
    """One camera (USB, stream or file) behind the driver interface."""

    def __init__(
        self,
        *,
        profile: CameraProfile,
        binding: DeviceBinding,
        settings: CameraSettings,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.profile = profile
        self.binding = binding
        self.settings = settings
        self.spec = parse_source(settings.source or binding.address)
        self.record = HealthRecord()
        self.rejects = RejectCounter(
            logger=log, device_id=binding.device_id, health=self.record, event="frame_rejected", noun="frames"
        )
        self._clock = clock
        self._worker: CaptureWorker | None = None
        self._queue: asyncio.Queue[Item | Reading] = asyncio.Queue(maxsize=_QUEUE)
        self._blurrer: FaceBlurrer | None = None
        self.dropped = 0  # findings lost to a full queue (a consumer stalled for long)
        # Each recent footfall period's counts so far, by line and start, over every open of this driver: a stream
        # that drops mid-minute reports the minute again after the reopen, and the hub keeps the last report of a
        # period (it sets, so that a replayed event never counts twice); so every report carries the running total.
        self._footfall_so_far: dict[tuple[str, datetime], tuple[int, int]] = {}
        self.frames_analysed = 0  # over every open of this driver

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        self.record.opening()
        if self.settings.blur_faces and self._blurrer is None:
            try:
                self._blurrer = await asyncio.to_thread(FaceBlurrer)
            except RuntimeError as err:
                # No face detector, no stills: an installation fault, which reopening does not mend.
                self.record.down(err)
                raise DriverError(f"{self.binding.device_id}: {err}") from err
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Item | Reading] = asyncio.Queue(maxsize=_QUEUE)
        self._queue = queue

        def deliver(item: Item) -> None:  # in the capture thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to read it
                loop.call_soon_threadsafe(self._put, queue, item)

        worker = CaptureWorker(
            spec=self.spec,
            profile=self.profile,
            settings=self.settings,
            analyzer=CameraAnalyzer(self.settings),
            deliver=deliver,
            clock=self._clock,
            name=f"camera {self.binding.device_id}",
            rejects=self.rejects,
        )
        self._worker = worker
        worker.start()
        try:
            async with asyncio.timeout(self.profile.open_timeout_s + 2):
                first = await queue.get()
        except TimeoutError:
            await self._stop()
            raise self.record.unavailable(
                f"{self.spec.shown} did not open in {self.profile.open_timeout_s} s"
            ) from None
        except BaseException:
            await self._stop()
            raise
        if not isinstance(first, Opened) or first.error is not None:
            await self._stop()
            why = first.error if isinstance(first, Opened) else getattr(first, "reason", "no answer")
            raise self.record.unavailable(str(why))
        self.record.up()
        log.info(
            "camera_opened",
            device_id=self.binding.device_id,
            source=self.spec.shown,
            size=f"{first.width}x{first.height}",
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.record.closed()
        await self._stop()

    def _put(self, queue: asyncio.Queue[Item | Reading], item: Item | Reading) -> None:
        if queue.full():
            self.dropped += 1
            self.record.note(f"findings dropped: the consumer is behind ({self.dropped} so far)")
            if not isinstance(item, Opened | Ended):
                return
            queue.get_nowait()  # the source's opening or end must arrive: the oldest finding goes instead
        queue.put_nowait(item)

    async def _stop(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        self.frames_analysed += worker.frames_analysed
        # A stream stuck in read() returns within its read timeout; the join waits that long at most.
        ended = await asyncio.to_thread(worker.stop, self.profile.read_timeout_s + 1)
        if not ended:
            log.warning("camera_thread_stuck", device_id=self.binding.device_id, source=self.spec.shown)

    # ------------------------------------------------------------------ readings

    async def readings(self) -> AsyncIterator[Reading]:
        """Motion, tamper, restored, footfall and snapshot readings until the source ends (DeviceUnavailableError)."""
        if not self.record.is_up or self._worker is None:
            raise DeviceUnavailableError(f"{self.binding.device_id} is not open")
        queue = self._queue
        while True:
            try:
                async with asyncio.timeout(_HEARTBEAT_S):
                    item = await queue.get()
            except TimeoutError:
                self._check_alive()
                continue
            if isinstance(item, Reading):
                yield self._count(item)
            elif isinstance(item, Found):
                for reading in await self._readings_of(item):
                    yield self._count(reading)
            elif isinstance(item, Counted):
                for period in item.footfall:
                    yield self._count(self._footfall_reading(period, item.at))
            elif isinstance(item, Ended):
                raise self.record.unavailable(f"{self.binding.device_id}: {item.reason}")

    def _check_alive(self) -> None:
        worker = self._worker
        if worker is None:
            raise self.record.unavailable(f"{self.binding.device_id} was closed")
        silent = self._clock.monotonic() - worker.last_frame_at
        if silent > self.profile.read_timeout_s:
            raise self.record.unavailable(f"{self.spec.shown}: no frame for {silent:.1f} s (stream stalled)")

    def _count(self, reading: Reading) -> Reading:
        self.record.read(reading.ts)
        return reading

    def _reading(self, kind: str, payload: dict[str, JsonValue], at: datetime, still: Still | None = None) -> Reading:
        return Reading(
            device_id=self.binding.device_id,
            kind=kind,
            ts=at,
            payload=payload,
            attachment=None if still is None else still.jpeg,
        )

    async def _still(self, frame: Image) -> Still:
        return await asyncio.to_thread(
            take_still,
            frame,
            blurrer=self._blurrer if self.settings.blur_faces else None,
            quality=self.settings.jpeg_quality,
        )

    async def _readings_of(self, found: Found) -> list[Reading]:
        findings = found.findings
        still = await self._still(found.frame) if findings.motion or findings.tamper else None
        out: list[Reading] = []
        for motion in findings.motion:
            boxes = [CameraBox(x=x, y=y, w=w, h=h) for x, y, w, h in motion.boxes]
            payload = CameraMotion(zone=motion.zone, boxes=boxes, area_ratio=motion.area_ratio)
            out.append(self._reading(EventKind.CAMERA_MOTION, _dump(payload), found.at, still))
        change = findings.tamper
        if change is not None and change.tampered:
            tamper = CameraTamper(reason=change.reason, score=change.score)
            out.append(self._reading(EventKind.CAMERA_TAMPER, _dump(tamper), found.at, still))
            log.warning("camera_tamper", device_id=self.binding.device_id, reason=change.reason, score=change.score)
        elif change is not None:
            restored = CameraRestored(reason=change.reason, tampered_s=change.duration_s)
            out.append(self._reading(EventKind.CAMERA_RESTORED, _dump(restored), found.at, still))
            log.info("camera_restored", device_id=self.binding.device_id, reason=change.reason)
        out.extend(self._footfall_reading(period, found.at) for period in findings.footfall)
        return out

    def _footfall_reading(self, period: CameraFootfall, at: datetime) -> Reading:
        """A period's report as its running total: what this driver counted of it before, plus ``period``."""
        key = (period.line, period.period_start)
        entered, exited = self._footfall_so_far.get(key, (0, 0))
        total = period.model_copy(update={"entered": entered + period.entered, "exited": exited + period.exited})
        self._footfall_so_far[key] = (total.entered, total.exited)
        while len(self._footfall_so_far) > _FOOTFALL_PERIODS_KEPT:
            del self._footfall_so_far[next(iter(self._footfall_so_far))]
        return self._reading(EventKind.CAMERA_FOOTFALL, total.model_dump(mode="json"), at)

    # ------------------------------------------------------------------ commands

    async def execute(self, command: Command) -> CommandResult:
        """``snapshot`` (a still of the latest frame as a camera.snapshot reading), ``status`` and ``ping``."""
        now = self._clock.now()
        if command.name == "snapshot":
            return await self._snapshot(command)
        if command.name == "status":
            return command_result(command, "done", json.dumps(self.status(), sort_keys=True), now=now)
        if command.name == "ping":
            return answer_ping(command, device_id=self.binding.device_id, now=now, detail=self.record.state.value)
        raise CommandNotSupportedError(f"{self.binding.device_id} does not support command {command.name!r}")

    async def _snapshot(self, command: Command) -> CommandResult:
        try:
            args = SnapshotArgs.model_validate(command.args)
        except ValidationError as err:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'args'}: {e['msg']}" for e in err.errors())
            return command_result(command, "rejected", f"bad snapshot arguments: {detail}", now=self._clock.now())
        worker = self._worker
        latest = None if worker is None else worker.latest
        if latest is None or not self.record.is_up:
            return command_result(command, "failed", "no frame yet (camera not open)", now=self._clock.now())
        frame, at = latest
        still = await self._still(frame)
        snapshot = CameraSnapshot(
            snapshot_ref="pending",  # the agent's spool fills the real reference in
            reason=args.reason,
            shelf_id=args.shelf_id,
            slot=args.slot,
            faces_blurred=still.blurred,
            width=still.width,
            height=still.height,
        )
        payload = snapshot.model_dump(mode="json", exclude_none=True, exclude={"snapshot_ref"})
        reading = self._reading(EventKind.CAMERA_SNAPSHOT, payload, at, still)
        if self._queue.full():
            return command_result(command, "failed", "the camera's readings are backed up", now=self._clock.now())
        self._queue.put_nowait(reading)
        faces = f"{still.faces_blurred} face(s) blurred" if still.blurred else "faces not blurred (blur_faces off)"
        detail = f"snapshot {still.width}x{still.height}, {faces}, {len(still.jpeg)} bytes JPEG"
        return command_result(command, "done", detail, now=self._clock.now())

    def status(self) -> dict[str, object]:
        """What the ``status`` command answers: state, source, frames, armed, tamper, footfall totals."""
        worker = self._worker
        analyzer = None if worker is None else worker.analyzer
        active = None if analyzer is None else analyzer.tamper.active
        footfall = None if analyzer is None else analyzer.footfall
        return {
            "state": self.record.state.value,
            "source": self.spec.shown,
            "frames_analysed": self.frames_analysed + (0 if worker is None else worker.frames_analysed),
            "armed": None if analyzer is None else analyzer.armed,
            "tamper": None if active is None else active.reason,
            "entered": None if footfall is None else footfall.total_entered,
            "exited": None if footfall is None else footfall.total_exited,
            "dropped": self.dropped,
        }

    def watches_shelf(self, shelf_id: str) -> bool:
        """Whether ``watches_shelves`` names the shelf: the agent then asks for a still at each of its picks."""
        return shelf_id in self.settings.watches_shelves

    def health(self) -> DriverHealth:
        """State, last error and counts, and a tamper while it lasts (the view covered...), without I/O."""
        health = self.record.snapshot()
        worker = self._worker
        tamper = None if worker is None or not self.record.is_up else worker.analyzer.tamper.active
        if tamper is None:
            return health
        return replace(health, attention=f"view {tamper.reason.replace('_', ' ')} (tampered)")


def _dump(model: BaseModel) -> dict[str, JsonValue]:
    return model.model_dump(mode="json", exclude_none=True)


def create(*, profile: CameraProfile, binding: DeviceBinding, settings: CameraSettings) -> Driver:
    """The driver of one camera."""
    driver: Driver = CameraDriver(profile=profile, binding=binding, settings=settings)
    return driver
