"""Camera stills on the gateway: a spool on disk within a quota, and the task that uploads them to the hub.

A reading may carry an attachment (a camera's JPEG, faces already blurred by its driver). The recorder
stores it here before the event is validated and puts the spool's reference in the payload's
``snapshot_ref``: the SHA-256 of the bytes, in hex, which is also the file's name, so the same still is
stored once and the hub can check what it received. Events never carry images; the outbox stays small.

- :class:`SnapshotSpool`: ``<ref>.jpg`` files (0600, written atomically) in a 0700 directory next to the
  outbox, each with a ``<ref>.json`` beside it (which device, when). Over ``quota_mb`` the oldest stills
  are evicted first, counted and logged once per episode. An event is never dropped for its still: when
  the still cannot be stored, the event goes on without a reference (a ``camera.snapshot`` without one is
  no valid event, and is refused like any other).
- :class:`SnapshotUploader`: sends each spooled still to the hub over HTTPS with the gateway's own client
  certificate (the files of ``[mqtt]``) as an idempotent ``PUT .../stores/{store_id}/snapshots/{ref}``, and
  deletes the file only once the hub has confirmed it. While the hub is away it retries with a jittered,
  capped backoff; the spool keeps the stills meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol
from uuid import uuid4

import httpx
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import JsonValue

from device_drivers.base import WatchesShelves
from edge_agent.config import SnapshotsConfig
from edge_agent.errors import AgentError
from edge_agent.timing import Backoff
from storegate.clock import Clock
from storegate.private_files import private_dir, write_private
from storegate.wire import Command, CommandResult, EventKind

if TYPE_CHECKING:
    from device_drivers.base import Reading

log = structlog.get_logger(__name__)

# The hub's gateway listener path; the reference is the still's SHA-256 in hex.
UPLOAD_PATH: Final = "/api/v1/gateway/stores/{store_id}/snapshots/{ref}"
# What the hub answers for a still it will never take (not a JPEG, too large, a bad reference): retrying cannot
# help, and keeping it would hold the queue, so the still is dropped and counted as refused.
PERMANENT_REFUSALS: Final = frozenset({400, 413, 415, 422})
_SUFFIX: Final = ".jpg"
_META_SUFFIX: Final = ".json"


def snapshot_ref(data: bytes) -> str:
    """The reference of a still: the SHA-256 of its bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class SpooledSnapshot:
    """A still waiting in the spool: its reference, size, and what the gateway knows of it."""

    ref: str
    size: int
    device_id: str | None
    taken_at: str | None


@dataclass(slots=True)
class SpoolStats:
    """What the spool did since the agent started (``bytes`` and ``waiting`` are as of now)."""

    spooled: int = 0
    uploaded: int = 0
    evicted: int = 0
    refused: int = 0
    failed: int = 0  # stills that could not be written (the event went on without one)
    bytes: int = 0
    waiting: int = 0


class SnapshotSpool:
    """Stills on disk, named by their SHA-256, within a quota; the oldest are evicted first."""

    def __init__(self, *, directory: Path, quota_bytes: int) -> None:
        self.directory = directory
        self.quota_bytes = quota_bytes
        self.stats = SpoolStats()
        self._sizes: dict[str, int] = {}  # ref -> size, oldest first (insertion order)
        self._total = 0  # sum of _sizes
        self._lock = asyncio.Lock()
        self._evicting = False  # an eviction episode: logged once when it starts and once when it ends
        self.wake = asyncio.Event()  # set when a still arrives; the uploader waits on it

    def open(self) -> SnapshotSpool:
        """Create the directory (0700) and take stock of what an earlier run left, oldest first."""
        private_dir(self.directory)
        found: list[tuple[float, str, int]] = []
        for path in self.directory.glob(f"*{_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                found.append((stat.st_mtime, path.stem, stat.st_size))
        for _, ref, size in sorted(found):
            self._sizes[ref] = size
            self._total += size
        for leftover in self.directory.glob(".*.tmp"):  # a write cut short by a power cut
            leftover.unlink(missing_ok=True)
        self._refresh()
        if self._sizes:  # the uploader's first pass takes them (no wake-up: this may run in a worker thread)
            log.info("snapshot_spool_opened", waiting=len(self._sizes), bytes=self.stats.bytes)
        return self

    def _path(self, ref: str) -> Path:
        return self.directory / f"{ref}{_SUFFIX}"

    def _meta_path(self, ref: str) -> Path:
        return self.directory / f"{ref}{_META_SUFFIX}"

    def _refresh(self) -> None:
        self.stats.bytes = self._total
        self.stats.waiting = len(self._sizes)

    def _check(self, data: bytes) -> str:
        """The still's reference; ValueError for an empty still or one larger than the whole quota."""
        if not data:
            raise ValueError("an empty still")
        if len(data) > self.quota_bytes:
            raise ValueError(f"a {len(data):,}-byte still is larger than the spool's quota ({self.quota_bytes:,})")
        return snapshot_ref(data)

    async def keep(self, data: bytes, *, device_id: str | None = None, taken_at: datetime | None = None) -> str:
        """Keep ``data`` (the files written in a worker thread, the books kept on the loop); returns its reference.

        Evicts the oldest stills to stay within the quota. Raises OSError when the file cannot be written (the
        caller goes on without a reference) and ValueError for an empty still or one larger than the quota.
        """
        ref = self._check(data)
        async with self._lock:  # devices record at once; one still at a time keeps the quota's arithmetic true
            if ref in self._sizes:  # the same still twice: stored once
                return ref
            victims = self._make_room(len(data))
            await asyncio.to_thread(self._write, ref, data, _meta(device_id, taken_at), victims)
            self._admit(ref, len(data))
        return ref

    def store(self, data: bytes, *, device_id: str | None = None, taken_at: datetime | None = None) -> str:
        """:meth:`keep` in the calling thread, for tools and tests (the agent's loop uses :meth:`keep`)."""
        ref = self._check(data)
        if ref not in self._sizes:
            victims = self._make_room(len(data))
            self._write(ref, data, _meta(device_id, taken_at), victims)
            self._admit(ref, len(data))
        return ref

    def _write(self, ref: str, data: bytes, meta: str, victims: list[str]) -> None:
        """Files only (safe in a worker thread): the evicted stills go, then the description, then the still."""
        for victim in victims:
            self._path(victim).unlink(missing_ok=True)
            self._meta_path(victim).unlink(missing_ok=True)
        # The description first: a still on disk always has one (an orphan description is overwritten next time).
        write_private(self._meta_path(ref), meta)
        write_private(self._path(ref), data)

    def _admit(self, ref: str, size: int) -> None:
        self._sizes[ref] = size
        self._total += size
        self.stats.spooled += 1
        self._refresh()
        self.wake.set()

    def _make_room(self, size: int) -> list[str]:
        """Take the oldest stills off the books until ``size`` more bytes fit; returns them (their files go next)."""
        victims: list[str] = []
        while self._sizes and self._total + size > self.quota_bytes:
            oldest = next(iter(self._sizes))
            self._total -= self._sizes.pop(oldest)
            victims.append(oldest)
        if victims:
            self.stats.evicted += len(victims)
            if not self._evicting:
                self._evicting = True
                log.warning(
                    "snapshot_spool_evicting",
                    evicted=len(victims),
                    quota_bytes=self.quota_bytes,
                    reason="the spool is full; the oldest stills go first (the events stay)",
                )
        elif self._evicting and self._total + size <= self.quota_bytes * 0.9:
            self._evicting = False
            log.info("snapshot_spool_eviction_stopped", evicted=self.stats.evicted)
        self._refresh()
        return victims

    def _remove(self, ref: str) -> None:
        """Off the books and off the disk (small unlinks: done on the loop)."""
        size = self._sizes.pop(ref, None)
        if size is not None:
            self._total -= size
        self._path(ref).unlink(missing_ok=True)
        self._meta_path(ref).unlink(missing_ok=True)

    def pending(self) -> list[SpooledSnapshot]:
        """The stills waiting for the hub, oldest first."""
        return [self._describe(ref, size) for ref, size in list(self._sizes.items())]

    def _describe(self, ref: str, size: int) -> SpooledSnapshot:
        device_id = taken_at = None
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads(self._meta_path(ref).read_text())
            device_id = meta.get("device_id") if isinstance(meta.get("device_id"), str) else None
            taken_at = meta.get("taken_at") if isinstance(meta.get("taken_at"), str) else None
        return SpooledSnapshot(ref=ref, size=size, device_id=device_id, taken_at=taken_at)

    def read(self, ref: str) -> bytes | None:
        """The still's bytes, or None when it is gone (evicted meanwhile). Files only: safe in a worker thread."""
        try:
            return self._path(ref).read_bytes()
        except FileNotFoundError:
            return None

    def forget(self, ref: str) -> None:
        """A still whose file went missing: off the books."""
        self._remove(ref)
        self._refresh()

    def uploaded(self, ref: str) -> None:
        """The hub has it: delete it here."""
        self._remove(ref)
        self.stats.uploaded += 1
        self._refresh()

    def refused(self, ref: str) -> None:
        """The hub will never take it: delete it here (counted)."""
        self._remove(ref)
        self.stats.refused += 1
        self._refresh()


def _meta(device_id: str | None, taken_at: datetime | None) -> str:
    """A still's description file: which device, and when (ISO 8601)."""
    return json.dumps({"device_id": device_id, "taken_at": None if taken_at is None else taken_at.isoformat()})


def client_ssl_context(*, ca_file: Path | None, cert_file: Path, key_file: Path | None) -> ssl.SSLContext:
    """TLS to the hub: its CA (the system's when None), and the gateway's own certificate and key."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    context.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
    return context


class UploadRefusedError(AgentError):
    """The hub answered an upload with an error that retrying may fix (401, 403, 5xx): kept and retried."""


class SnapshotUploader:
    """Sends spooled stills to the hub, oldest first, deleting each only once the hub confirmed it."""

    def __init__(
        self,
        *,
        spool: SnapshotSpool,
        store_id: str,
        hub_url: str,
        ssl_context: ssl.SSLContext,
        clock: Clock,
        rng: random.Random,
        timeout_s: float = 30.0,
        backoff: Backoff | None = None,
        transport: Callable[[], httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        self._spool = spool
        self._store_id = store_id
        self._hub_url = hub_url.rstrip("/")
        self._ssl_context = ssl_context
        self._clock = clock
        self._rng = rng  # jitter only
        self._timeout_s = timeout_s
        self._backoff = backoff or Backoff(initial_s=1.0, max_s=60.0)
        self._transport = transport
        self.failing_since: float | None = None  # monotonic, while uploads fail
        self.last_error: str | None = None

    async def run(self) -> None:
        """Upload until cancelled: whatever is spooled, then wait for the next still."""
        async with httpx.AsyncClient(
            verify=self._ssl_context,
            timeout=self._timeout_s,
            transport=self._transport() if self._transport is not None else None,
        ) as client:
            attempt = 0
            while True:
                self._spool.wake.clear()
                try:
                    await self.upload_all(client)
                except (httpx.HTTPError, UploadRefusedError, OSError) as err:
                    attempt += 1
                    self._failed(err)
                    await self._clock.sleep(self._backoff.delay(attempt, self._rng))
                    continue
                attempt = 0
                self._recovered()
                await self._spool.wake.wait()

    async def upload_all(self, client: httpx.AsyncClient) -> int:
        """Upload every spooled still once; returns how many the hub confirmed. Raises on the first failure."""
        confirmed = 0
        for snapshot in self._spool.pending():
            data = await asyncio.to_thread(self._spool.read, snapshot.ref)
            if data is None:
                self._spool.forget(snapshot.ref)
                continue
            params = {k: v for k, v in (("device_id", snapshot.device_id), ("taken_at", snapshot.taken_at)) if v}
            response = await client.put(
                self._hub_url + UPLOAD_PATH.format(store_id=self._store_id, ref=snapshot.ref),
                content=data,
                params=params,
                headers={"Content-Type": "image/jpeg"},
            )
            if response.status_code in (200, 201):
                self._spool.uploaded(snapshot.ref)
                confirmed += 1
            elif response.status_code in PERMANENT_REFUSALS:
                self._spool.refused(snapshot.ref)
                log.warning(
                    "snapshot_refused_by_hub", ref=snapshot.ref, status=response.status_code, detail=_detail(response)
                )
            else:
                raise UploadRefusedError(f"the hub answered {response.status_code}: {_detail(response)}")
        return confirmed

    def _failed(self, err: Exception) -> None:
        error = str(err) or type(err).__name__
        if self.failing_since is None:
            self.failing_since = self._clock.monotonic()
            log.warning("snapshot_upload_failing", error=error, waiting=self._spool.stats.waiting)
        else:
            log.debug("snapshot_upload_still_failing", error=error)
        self.last_error = error

    def _recovered(self) -> None:
        if self.failing_since is not None:
            log.info("snapshot_upload_recovered", failed_for_s=round(self._clock.monotonic() - self.failing_since, 1))
            self.failing_since = None
            self.last_error = None


def _detail(response: httpx.Response) -> str:
    """The hub's error in words (its JSON ``detail``), cut short."""
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict) and "detail" in body:
            return str(body["detail"])[:200]
    return response.text[:200]


def spool_directory(config: SnapshotsConfig, outbox_path: Path) -> Path:
    """Where the spool is: ``[snapshots] dir``, or 'snapshots' next to the outbox."""
    return config.dir if config.dir is not None else outbox_path.parent / "snapshots"


def quota_bytes(config: SnapshotsConfig) -> int:
    """The spool's quota in bytes."""
    return config.quota_mb * 1024 * 1024


def describe(stats: SpoolStats) -> dict[str, int]:
    """The spool's counters as plain numbers (for health and logs)."""
    return {
        "spooled": stats.spooled,
        "uploaded": stats.uploaded,
        "evicted": stats.evicted,
        "refused": stats.refused,
        "failed": stats.failed,
        "bytes": stats.bytes,
        "waiting": stats.waiting,
    }


class SupervisedDevice(Protocol):
    """What :class:`ShelfPickSnapshots` needs of a device's supervisor."""

    device_id: str

    @property
    def driver(self) -> object | None:
        """The open driver, or None while the device is down."""
        ...

    async def execute(self, command: Command) -> CommandResult:
        """Run a command on the device."""
        ...


class ShelfPickSnapshots:
    """On a shelf pick, asks each camera that watches that shelf for a still, at once.

    A camera says which shelves it watches (:class:`~device_drivers.base.WatchesShelves`, from its settings'
    ``watches_shelves``); it answers the ``snapshot`` command with a ``camera.snapshot`` reading carrying
    the JPEG, which the recorder spools like any other. The request runs beside the recording: a slow
    camera never holds up a shelf.
    """

    def __init__(
        self,
        *,
        store_id: str,
        gateway_id: str,
        devices: Callable[[], Iterable[SupervisedDevice]],
        clock: Clock,
    ) -> None:
        self._store_id = store_id
        self._gateway_id = gateway_id
        self._devices = devices
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self.requested = 0
        self.failed = 0

    def observe(self, reading: Reading) -> None:
        """Ask the cameras watching this reading's shelf for a still if it is a pick (items taken)."""
        if reading.kind != EventKind.SHELF_PICK:
            return
        slot = reading.payload.get("slot")
        delta = reading.payload.get("delta")
        if isinstance(delta, int | float) and delta >= 0:
            return
        for device in self._devices():
            driver = device.driver
            if not isinstance(driver, WatchesShelves) or not driver.watches_shelf(reading.device_id):
                continue
            args: dict[str, JsonValue] = {"reason": "shelf_pick", "shelf_id": reading.device_id}
            if isinstance(slot, int):
                args["slot"] = slot
            command = Command(
                command_id=uuid4(),
                store_id=self._store_id,
                gateway_id=self._gateway_id,
                device_id=device.device_id,
                name="snapshot",
                args=args,
                issued_at=self._clock.now(),
            )
            task = asyncio.create_task(self._request(device, command), name=f"snapshot request {device.device_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _request(self, device: SupervisedDevice, command: Command) -> None:
        self.requested += 1
        try:
            result = await device.execute(command)
        except Exception as err:  # a camera that is down or fails: the pick is recorded anyway
            self.failed += 1
            log.warning(
                "shelf_pick_snapshot_failed",
                camera=device.device_id,
                shelf=command.args.get("shelf_id"),
                error=str(err),
            )
            return
        if result.status != "done":
            self.failed += 1
            log.warning(
                "shelf_pick_snapshot_failed",
                camera=device.device_id,
                shelf=command.args.get("shelf_id"),
                error=result.detail,
            )

    async def stop(self) -> None:
        """Cancel the requests still running."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class SnapshotCollector:
    """Prometheus collector of the spool's counters, read at scrape time."""

    def __init__(self, stats: Callable[[], SpoolStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        """The spool's metrics as of now."""
        stats = self._stats()
        for name, doc, value in (
            ("spooled", "Camera stills kept in the spool.", stats.spooled),
            ("uploaded", "Stills the hub confirmed (then deleted here).", stats.uploaded),
            ("evicted", "Stills evicted, oldest first, because the spool's quota was full.", stats.evicted),
            ("refused", "Stills the hub refused for good (not a JPEG, too large), dropped.", stats.refused),
            ("failed", "Stills that could not be written; their events went on without them.", stats.failed),
        ):
            yield CounterMetricFamily(f"storegate_agent_snapshots_{name}", doc, value=value)
        yield GaugeMetricFamily("storegate_agent_snapshots_bytes", "Bytes of stills in the spool.", value=stats.bytes)
        yield GaugeMetricFamily(
            "storegate_agent_snapshots_waiting", "Stills in the spool waiting for the hub.", value=stats.waiting
        )
