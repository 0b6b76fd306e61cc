"""Checkpointing the hub's SQLite WAL in the background, off the ingest commit path.

With ``wal_autocheckpoint`` SQLite checkpoints inside whichever commit crosses the
threshold: that one unit of work copies ~40 MiB of pages into the database file and
fsyncs it, and the acknowledgements waiting on it are late by tens of milliseconds.
The hub instead turns automatic checkpoints off on its own connections and runs a
PASSIVE checkpoint every few seconds from a connection of its own, in a thread: PASSIVE never
waits for the writer (nor the writer for it), so commits only ever pay for their WAL fsync.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Final

import structlog

from storegate.logs import worth_logging
from storegate.tasks import BackgroundTask

log = structlog.get_logger(__name__)

# Every second. Every 5 s copied an index page once for several units and saved at most 0.7 µs of hub CPU an
# event, but each checkpoint then wrote five times the pages and stalled the commits beside it: the edge latency
# p99 at 1,000 events/s went from 20-21 ms to 54-112 ms (docs/benchmarks.md, "where the work leaves it").
CHECKPOINT_INTERVAL_S: Final = 1.0
# If a checkpoint cannot keep up (a reader pinning old frames), the WAL still stops growing here:
# the next checkpoint is a TRUNCATE, which waits briefly for readers and the writer.
WAL_HARD_LIMIT_BYTES: Final = 256 * 1024 * 1024


class WalCheckpointer:
    """Runs PASSIVE checkpoints of one SQLite database every ``interval_s`` until stopped."""

    def __init__(self, *, path: Path, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self.path = path
        self.interval_s = interval_s
        self.checkpoints = 0
        self.failures = 0
        self._checkpoints = BackgroundTask(self._run, name="storegate-hub-wal-checkpoints")
        self._lock = threading.Lock()  # one checkpoint at a time, even if a thread outlives a cancel
        self._conn: sqlite3.Connection | None = None

    def start(self) -> None:
        """Start checkpointing in the background."""
        self._checkpoints.start()

    async def stop(self) -> None:
        """Stop, run one last checkpoint so the WAL is small at rest, and close the connection."""
        await self._checkpoints.stop()
        await asyncio.to_thread(self._checkpoint_once, "TRUNCATE")
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await asyncio.to_thread(self._checkpoint_once, None)

    def _checkpoint_once(self, mode: str | None) -> None:
        with self._lock:
            try:
                if self._conn is None:
                    # check_same_thread off: to_thread may pick a different worker thread each time.
                    self._conn = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
                    self._conn.execute("PRAGMA wal_autocheckpoint=0")
                if mode is None:
                    wal = self.path.with_name(self.path.name + "-wal")
                    size = wal.stat().st_size if wal.exists() else 0
                    mode = "TRUNCATE" if size > WAL_HARD_LIMIT_BYTES else "PASSIVE"
                self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                self.checkpoints += 1
            except sqlite3.Error as err:
                self.failures += 1
                # Logged on the 1st, 10th, 100th... failure: a locked database for a minute is not 60 lines.
                if worth_logging(self.failures):
                    log.warning("wal_checkpoint_failed", database=str(self.path), error=str(err), count=self.failures)
