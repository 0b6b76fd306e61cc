"""Stills in and out: the checks an upload passes, the files on disk, the rows, and the retention purge.

An upload is accepted once: the body is at most ``max_bytes``, a JPEG by its magic bytes, decodes whole with
Pillow (already installed with the hub, through fpdf2) without declaring more than ``max_pixels``, and its
SHA-256 is the reference it was sent under. The same still sent again (a gateway that did not see the first
answer) is answered as stored, and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import structlog
from PIL import Image, UnidentifiedImageError
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.db import writegate
from hub.db.writegate import WriteGate
from hub.errors import HubError
from hub.snapshots.models import SnapshotRow
from hub.snapshots.settings import SnapshotSettings
from storegate.private_files import private_dir, write_private

log = structlog.get_logger(__name__)

JPEG_MAGIC: Final = b"\xff\xd8\xff"
REF_PATTERN: Final = re.compile(r"^[0-9a-f]{64}$")
# Expired stills deleted per transaction: a month of a large chain's stills goes in bounded steps.
PURGE_BATCH: Final = 500


class SnapshotRefusedError(HubError, ValueError):
    """An upload the hub does not take: ``status`` is the HTTP answer, ``reason`` the counter label."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class StillInfo:
    """What the checks found: the still's size in bytes and pixels."""

    size: int
    width: int
    height: int


def check_still(ref: str, data: bytes, *, max_bytes: int, max_pixels: int) -> StillInfo:
    """Raise SnapshotRefusedError unless ``data`` is a whole JPEG within the limits whose SHA-256 is ``ref``."""
    if not REF_PATTERN.match(ref):
        raise SnapshotRefusedError(422, "bad_ref", "the reference must be the still's SHA-256, 64 lowercase hex digits")
    if len(data) > max_bytes:
        raise SnapshotRefusedError(413, "too_large", f"a still may be at most {max_bytes:,} bytes, not {len(data):,}")
    if not data.startswith(JPEG_MAGIC):
        raise SnapshotRefusedError(415, "not_jpeg", "the body is not a JPEG (it does not start with FF D8 FF)")
    if hashlib.sha256(data).hexdigest() != ref:
        raise SnapshotRefusedError(422, "hash_mismatch", "the body's SHA-256 is not the reference it was sent under")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise SnapshotRefusedError(
                        413, "too_many_pixels", f"the still declares {width}x{height} pixels, over {max_pixels:,}"
                    )
                image.load()  # decodes it whole: a truncated or corrupt file fails here
    except SnapshotRefusedError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as err:
        raise SnapshotRefusedError(415, "not_jpeg", f"the body does not decode as a JPEG: {err}") from err
    return StillInfo(size=len(data), width=width, height=height)


class SnapshotMetrics:
    """The hub's counters of stills: stored, received again, refused by reason, served, purged."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stored = Counter("storegate_hub_snapshots_stored", "stills stored for the first time", registry=registry)
        self.repeated = Counter(
            "storegate_hub_snapshots_repeated", "stills uploaded again that the hub already held", registry=registry
        )
        self.refused = Counter(
            "storegate_hub_snapshots_refused",
            "uploads refused: not_jpeg, too_large, too_many_pixels, hash_mismatch, bad_ref, bad_parameter, "
            "wrong_store, unknown_gateway, revoked_gateway, not_a_gateway, no_certificate",
            ["reason"],
            registry=registry,
        )
        self.served = Counter("storegate_hub_snapshots_served", "stills served to operators", registry=registry)
        self.purged = Counter("storegate_hub_snapshots_purged", "stills deleted after retention", registry=registry)


class SnapshotFiles:
    """The stills' files under one directory (0700), each 0600 and written atomically, two hex digits a folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def open(self) -> SnapshotFiles:
        """Create the directory if needed and make it private."""
        private_dir(self.directory)
        return self

    @staticmethod
    def relative_path(store_id: str, ref: str) -> str:
        """Where a store's still lies, relative to the directory."""
        return f"{store_id}/{ref[:2]}/{ref}.jpg"

    def write(self, relative: str, data: bytes) -> None:
        """Write a still's file (atomically, 0600, in 0700 folders)."""
        path = self.directory / relative
        private_dir(path.parent)
        write_private(path, data)

    def read(self, relative: str) -> bytes | None:
        """A still's bytes, or None when its file is gone."""
        try:
            return (self.directory / relative).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, relative: str) -> bool:
        """Whether the file is there."""
        return (self.directory / relative).is_file()

    def delete(self, relative: str) -> None:
        """Delete a still's file; gone already is fine."""
        (self.directory / relative).unlink(missing_ok=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Upload:
    """One still as a gateway sent it, after the checks."""

    store_id: str
    gateway_id: str
    ref: str
    data: bytes
    device_id: str | None
    taken_at: datetime | None


async def store_upload(
    session: AsyncSession, files: SnapshotFiles, upload: Upload, *, settings: SnapshotSettings, now: datetime
) -> bool:
    """Keep an upload: its file first, then its row (committed here). True when it is new, False when held already.

    The file is written before the row, so a row always has its file; a file without a row (a crash between
    the two) is written again by the gateway's retry and its row added then.
    """
    relative = SnapshotFiles.relative_path(upload.store_id, upload.ref)
    existing = await session.get(SnapshotRow, (upload.store_id, upload.ref))
    if existing is not None and files.exists(existing.path):
        return False
    await asyncio.to_thread(files.write, relative, upload.data)
    if existing is not None:  # the row outlived its file (a restore without the files): the file is back
        return False
    session.add(
        SnapshotRow(
            store_id=upload.store_id,
            ref=upload.ref,
            gateway_id=upload.gateway_id,
            device_id=upload.device_id,
            taken_at=upload.taken_at,
            received_at=now,
            size=len(upload.data),
            path=relative,
            expires_at=now + timedelta(days=settings.retention_days),
        )
    )
    try:
        await session.commit()
    except IntegrityError:  # the same still from a retry that raced the first: held either way
        await session.rollback()
        return False
    return True


async def find(session: AsyncSession, store_id: str, ref: str) -> SnapshotRow | None:
    """A store's still by its reference."""
    return await session.get(SnapshotRow, (store_id, ref))


async def purge_expired(session: AsyncSession, files: SnapshotFiles, *, now: datetime) -> int:
    """Delete the files and rows of stills whose retention ended, in batches; returns how many went."""
    purged = 0
    while True:
        rows = (
            await session.execute(
                select(SnapshotRow.store_id, SnapshotRow.ref, SnapshotRow.path)
                .where(SnapshotRow.expires_at <= now)
                .order_by(SnapshotRow.expires_at)
                .limit(PURGE_BATCH)
            )
        ).all()
        if not rows:
            return purged
        for _, _, relative in rows:
            with contextlib.suppress(OSError):
                files.delete(relative)
        for store_id, ref, _ in rows:
            await session.execute(delete(SnapshotRow).where(SnapshotRow.store_id == store_id, SnapshotRow.ref == ref))
        await session.commit()
        purged += len(rows)
        if len(rows) < PURGE_BATCH:
            return purged


class RetentionPurge:
    """Deletes expired stills every ``purge_interval_s`` (and once at start), counted and logged."""

    def __init__(
        self,
        *,
        files: SnapshotFiles,
        sessions: async_sessionmaker[AsyncSession],
        write_gate: WriteGate,
        metrics: SnapshotMetrics,
        interval_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._files = files
        self._sessions = sessions
        self._write_gate = write_gate
        self._metrics = metrics
        self._interval_s = interval_s
        self._clock = clock

    async def purge_once(self) -> int:
        """One pass: every still whose retention ended goes; returns how many."""
        async with self._write_gate.turn(writegate.RETENTION), self._sessions() as session:
            purged = await purge_expired(session, self._files, now=self._clock())
        if purged:
            self._metrics.purged.inc(purged)
            log.info("snapshots_purged", count=purged)
        return purged

    async def run(self) -> None:
        """Purge, then wait the interval, until cancelled; a failed pass is logged and tried again next time."""
        while True:
            try:
                await self.purge_once()
            except Exception as err:  # a database hiccup must not end retention for good
                log.error("snapshot_purge_failed", error=str(err))
            await asyncio.sleep(self._interval_s)
