"""The durable outbox: events wait here, in SQLite, until the hub says it has stored them.

The table has the shape of ThingsBoard Gateway's SQLite storage: an integer
``seq`` primary key, read in order with ``LIMIT``, acknowledged with ``DELETE
... WHERE seq <= ?``. Here the outbox assigns ``seq`` itself (``last_seq + 1``,
kept in the ``state`` row and never reused, even after every row was deleted),
so each event's JSON can be written once, with its seq, when it is committed,
and spliced into an ``EventBatch`` at send time without being parsed again.

A row's ``body`` is the event's JSON *without* the gateway's identity
(``{"event_id":…,"seq":…,"device_id":…,"kind":…,"ts":…,"payload":…}``): the
sender puts ``"v"``, ``store_id``, ``gateway_id`` and ``stream`` in front of it
(:func:`event_json`). That saves ~110 bytes an event against the disk quota.
A CRC32 of the body is stored with it and checked when the row is read, so a
bit flipped on an SD card becomes a reported loss instead of a batch the hub
rejects forever.

A ``stream`` UUID is created once with the database; it names this life of the
outbox, so the hub can tell a wiped outbox (whose seq restarts at 1) from a replay.

The outbox also keeps, in the same transactions:

- ``device_marks``: each numbering device's highest committed ``source_seq``;
  a reading at or below it is a replay and is dropped (exactly once from device to outbox);
- the quota (``max_events``, ``max_bytes``): an append that would exceed it evicts
  the lowest-priority, oldest events, and appends ``outbox.loss`` events naming them,
  in its own transaction;
- ``acked_through``: the highest seq the hub acknowledged, to recognise a hub that
  later claims less (restored from a backup) and report what is gone as ``not_held``.

The outbox fits itself to its filesystem (:func:`disk_fit`, measured at open and at every
SQLITE_FULL): the WAL checkpoints early enough for a small disk, and ``max_page_count``
keeps the database out of the room the WAL, a reserve file (``<outbox>.reserve``) and the
status file need, so that on a full disk an eviction or an ack can still be written
(:meth:`Outbox._with_room` says in what order). docs/reliability.md tells why.

One :class:`Outbox` owns its file: it holds SQLite's exclusive lock while open, so
a second agent pointed at the same file fails at once instead of sending and deleting
the same events. All SQLite work runs on one thread of its own, one operation (one
transaction) at a time, so the event loop never waits for the disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Final, NamedTuple, TypeVar
from uuid import UUID, uuid4

import structlog
from pydantic import JsonValue, ValidationError

from edge_agent.errors import AgentError
from edge_agent.sqlite_thread import SqliteOnItsThread
from storegate import wire
from storegate.private_files import PRIVATE_FILE_MODE, private_sqlite_files
from storegate.wire import MAX_LOSS_RANGES, DataLoss, EventKind, Priority, SeqRange, priority_of, utc_now

log = structlog.get_logger(__name__)

# The outbox's format (``PRAGMA user_version``), migrated forward when an agent opens an older one. A format
# records in ``meta`` the oldest format an agent must know to use the file (``oldest_reader``): a change that older
# agents can still work with (a new index, a new meta key) keeps it, so an agent rolled back after an update goes on
# with the file; one that they cannot raises it, and such an agent refuses the file in words and leaves it untouched.
SCHEMA_VERSION: Final = 2
OLDEST_READER: Final = 2
# Counted against max_bytes on top of the JSON: the row's other columns, its cell and its index entry.
ROW_OVERHEAD_BYTES: Final = 48
# An eviction goes this far below the quota, so that the next appends do not evict (and write a
# loss event) one by one: one loss event per 1 % of the quota at most.
EVICTION_HEADROOM: Final = 0.01
# Room kept for a loss record when evicting for the byte quota (a record with many ranges may be larger;
# eviction then goes on until it fits).
LOSS_ROW_BYTES: Final = 512
DISK_FULL_DETAIL: Final = "disk full: evicted to make room for newer events"
# Priorities evicted first to last. Loss events themselves are never evicted.
EVICTION_ORDER: Final = (Priority.TELEMETRY, Priority.DEVICE, Priority.SALES, Priority.SECURITY)
# Priorities the sender may publish ahead of the backlog.
HIGH_PRIORITIES: Final = (Priority.SECURITY, Priority.SALES)
_SCAN_CHUNK: Final = 1000

# What SQLite reports when the file cannot grow: a full disk, or max_page_count.
SQLITE_FULL: Final = 13

# The WAL is checkpointed into the database once it holds this many pages. SQLite's default,
# 1,000 pages (4 MB), is more than a small disk has: the WAL filled a 2 MB filesystem before its
# first checkpoint, and then not even an eviction could be written. Fewer pages cost throughput
# (1,000-event commits on the busy dev VM: 64 pages 35-55 % slower than 1,000, 256 pages 10-30 %),
# so the outbox takes a sixteenth of what its filesystem has for it, within these bounds.
WAL_PAGES_MIN: Final = 64
WAL_PAGES_MAX: Final = 1000
# Beyond the checkpoint's worth, the WAL may take one commit group before the checkpoint runs
# (``outbox.commit_max_events`` of 1,000 events of ~350 bytes, with its index).
TRANSACTION_ROOM_BYTES: Final = 512 * 1024
# A reserve file kept beside the outbox: deleted to give a write's WAL frames room when the
# filesystem is full (another program filled it), then made again.
DISK_RESERVE_BYTES: Final = 256 * 1024
# The status file and its temporary copy (edge_agent.status.STATUS_FILE_BYTES each).
STATUS_ROOM_BYTES: Final = 32 * 1024
# When the disk is full, evict at least this share of the waiting events at once: deleting the
# oldest rows frees whole pages only as leaves empty, and one eviction per batch would cost a
# failed transaction and a checkpoint each time.
DISK_FULL_EVICTION_SHARE: Final = 0.05

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_seq INTEGER NOT NULL,
        depth INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        acked_through INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY,
        priority INTEGER NOT NULL,
        kind TEXT NOT NULL,
        ts REAL NOT NULL,
        size INTEGER NOT NULL,
        crc INTEGER NOT NULL,
        body BLOB NOT NULL
    )""",
    # The priority lane (unsent security and sales events) and eviction (lowest priority, oldest).
    "CREATE INDEX IF NOT EXISTS events_by_priority ON events (priority, seq)",
    "CREATE TABLE IF NOT EXISTS device_marks (device_id TEXT PRIMARY KEY, source_seq INTEGER NOT NULL) WITHOUT ROWID",
)
_INSERT: Final = "INSERT INTO events (seq, priority, kind, ts, size, crc, body) VALUES (?, ?, ?, ?, ?, ?, ?)"
_SAVE_STATE: Final = "UPDATE state SET last_seq = ?, depth = ?, bytes = ?, acked_through = ? WHERE id = 1"
# Device ids and kinds go into the JSON unescaped; the wire patterns allow only these characters.
_PLAIN: Final = re.compile(r"[A-Za-z0-9_.:-]+")

T = TypeVar("T")
# An events row as inserted: seq, priority, kind, ts, size, crc, body.
_Row = tuple[int, int, str, float, int, int, bytes]


class _EventIds:
    """Random (version 4) UUIDs as text, from os.urandom read 4 KiB at a time.

    ``uuid.uuid4()`` makes a getrandom() system call per id, which on a small VM or a
    Pi costs more than everything else the agent does for an event; this makes one per
    256 ids, with the same randomness. Reset in a forked child, so two processes never
    share a buffer.
    """

    _VERSION_MASK: Final = ~((0xF000 << 64) | (0xC000 << 48))
    _VERSION_BITS: Final = (0x4000 << 64) | (0x8000 << 48)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._buffer, self._offset = b"", 0

    def __call__(self) -> str:
        with self._lock:
            if self._offset >= len(self._buffer):
                self._buffer, self._offset = os.urandom(4096), 0
            start = self._offset
            self._offset += 16
            chunk = self._buffer[start : start + 16]
        h = f"{int.from_bytes(chunk) & self._VERSION_MASK | self._VERSION_BITS:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


new_event_id: Final = _EventIds()

# Compact JSON; allow_nan=False: NaN and Infinity are not JSON, and the hub would reject the whole batch.
encode_json: Final[Callable[[object], str]] = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


class OutboxError(AgentError):
    """The outbox file cannot be used: unreadable, not a database, in use, or from a newer agent."""


def newer_format_refusal(version: int, oldest_reader: int | None, *, path: Path | str) -> str | None:
    """Why this agent may not use an outbox of a newer ``version`` (None: it may), in words for the log."""
    if oldest_reader is not None and oldest_reader <= SCHEMA_VERSION:
        return None
    needs = f"an agent that knows format {oldest_reader} or later" if oldest_reader else "the agent that wrote it"
    return (
        f"outbox {path} is in format {version}, which this agent (format {SCHEMA_VERSION}) cannot read: it needs "
        f"{needs}; the file is left untouched (switch back to the newer release, or move the file aside to start "
        "a new outbox, losing what it holds)"
    )


def _oldest_reader(conn: sqlite3.Connection) -> int | None:
    """The ``oldest_reader`` a newer format recorded, or None (no meta table, no key, not a number)."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'oldest_reader'").fetchone()
    except sqlite3.OperationalError:
        return None
    if row is None or not str(row[0]).isdigit():
        return None
    return int(row[0])


class OutboxFullError(AgentError):
    """An append does not fit in the quota even after evicting every event that may be evicted."""


def is_disk_full(err: BaseException) -> bool:
    """Whether a SQLite error means the database cannot grow (SQLITE_FULL: disk or max_page_count)."""
    return isinstance(err, sqlite3.Error) and getattr(err, "sqlite_errorcode", None) == SQLITE_FULL


def reserve_path(outbox_path: Path) -> Path:
    """The outbox's reserve file: space set aside so that an eviction can be written on a full disk."""
    return outbox_path.with_name(outbox_path.name + ".reserve")


class DiskFit(NamedTuple):
    """How the outbox uses a filesystem: pages of WAL between checkpoints, and pages of database at most."""

    wal_pages: int
    page_cap: int


def disk_fit(*, used_bytes: int, free_bytes: int, page_size: int) -> DiskFit:
    """The WAL and the database sized to a filesystem with ``free_bytes`` free.

    ``used_bytes``: what the database, its WAL and the reserve file take now. The database
    may grow into all of it and the free space, less the room for the WAL (a checkpoint's
    worth and one commit group), the reserve and the status file.
    """
    available = used_bytes + free_bytes
    wal_pages = min(max(available // 16 // page_size, WAL_PAGES_MIN), WAL_PAGES_MAX)
    room = wal_pages * page_size + TRANSACTION_ROOM_BYTES + DISK_RESERVE_BYTES + STATUS_ROOM_BYTES
    return DiskFit(wal_pages=wal_pages, page_cap=max(1, (available - room) // page_size))


def wal_room_bytes(wal_pages: int, page_size: int) -> int:
    """Free space the WAL needs on the filesystem: a checkpoint's worth of pages and one commit group."""
    return wal_pages * page_size + TRANSACTION_ROOM_BYTES


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@dataclass(frozen=True, slots=True)
class Quota:
    """How much the outbox may hold."""

    max_events: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A validated event to append, its payload already JSON; the outbox assigns its ``seq``.

    ``event_id`` is the UUID as text, as it goes into the JSON.
    """

    device_id: str
    kind: str
    ts: datetime
    payload_json: str
    event_id: str = field(default_factory=new_event_id)
    source_seq: int | None = None

    @classmethod
    def of(
        cls,
        *,
        device_id: str,
        kind: str,
        ts: datetime,
        payload: dict[str, JsonValue],
        source_seq: int | None = None,
    ) -> NewEvent:
        """An event with its payload serialised (NaN and Infinity refused: they are not JSON)."""
        return cls(
            device_id=device_id,
            kind=kind,
            ts=ts,
            payload_json=encode_json(payload),
            source_seq=source_seq,
        )


class OutboxRow(NamedTuple):
    """A stored event as the sender needs it: ``intact`` is False when the body fails its CRC."""

    seq: int
    priority: int
    body: bytes
    intact: bool

    def fields(self) -> dict[str, JsonValue]:
        """The body parsed (for tests and tools; the sender never parses it)."""
        value: dict[str, JsonValue] = json.loads(self.body)
        return value


class Victim(NamedTuple):
    """An evicted event."""

    seq: int
    priority: int
    kind: str
    size: int


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one append did."""

    stored: int
    duplicates: int = 0
    first_seq: int | None = None
    evicted: dict[Priority, int] = field(default_factory=dict)
    loss_events: int = 0


def event_json(prefix: bytes, body: bytes) -> bytes:
    """One wire Event: the gateway's identity (``prefix``, see :func:`identity_prefix`) spliced into a body."""
    return prefix + body[1:]


def identity_prefix(*, store_id: str, gateway_id: str, stream: UUID) -> bytes:
    """The JSON that opens every event of this gateway and stream, up to the body's first field."""
    return (
        f'{{"v":{wire.PROTOCOL_VERSION},"store_id":"{store_id}","gateway_id":"{gateway_id}","stream":"{stream}",'
    ).encode()


def event_body(event: NewEvent, seq: int) -> bytes:
    """The stored JSON of an event at ``seq`` (see the module docstring)."""
    if event.ts.tzinfo is None:
        raise ValueError(f"event {event.event_id} has a naive ts {event.ts.isoformat()}; timestamps must be aware")
    if not (_PLAIN.fullmatch(event.device_id) and _PLAIN.fullmatch(event.kind)):
        raise ValueError(f"device id {event.device_id!r} or kind {event.kind!r} has characters the wire forbids")
    ts = event.ts.astimezone(UTC).isoformat()
    return (
        f'{{"event_id":"{event.event_id}","seq":{seq},"device_id":"{event.device_id}","kind":"{event.kind}",'
        f'"ts":"{ts}","payload":{event.payload_json}}}'
    ).encode()


def seq_ranges(seqs: Iterable[int]) -> list[SeqRange]:
    """Ascending seqs compressed into inclusive ranges."""
    ranges: list[SeqRange] = []
    first = last = None
    for seq in seqs:
        if last is not None and seq == last + 1:
            last = seq
            continue
        if first is not None and last is not None:
            ranges.append(SeqRange(first=first, last=last))
        first = last = seq
    if first is not None and last is not None:
        ranges.append(SeqRange(first=first, last=last))
    return ranges


def subtract_ranges(ranges: Sequence[SeqRange], taken: Sequence[SeqRange]) -> list[SeqRange]:
    """``ranges`` without anything in ``taken`` (both ascending and non-overlapping)."""
    result: list[SeqRange] = []
    for current in ranges:
        first = current.first
        for cut in taken:
            if cut.last < first or cut.first > current.last:
                continue
            if cut.first > first:
                result.append(SeqRange(first=first, last=cut.first - 1))
            first = cut.last + 1
            if first > current.last:
                break
        if first <= current.last:
            result.append(SeqRange(first=first, last=current.last))
    return result


def merge_ranges(ranges: Iterable[SeqRange]) -> list[SeqRange]:
    """Ranges sorted, with overlapping and adjacent ones joined."""
    merged: list[SeqRange] = []
    for current in sorted(ranges, key=lambda r: r.first):
        if merged and current.first <= merged[-1].last + 1:
            if current.last > merged[-1].last:
                merged[-1] = SeqRange(first=merged[-1].first, last=current.last)
        else:
            merged.append(current)
    return merged


def _row_of(event: NewEvent, seq: int) -> _Row:
    body = event_body(event, seq)
    # A loss record travels in the lane ahead of the backlog: until the hub has it, its through_seq
    # cannot pass the hole the loss left, and the backlog before the record may be larger than
    # the send window. (It is never evicted either way.)
    priority = Priority.SECURITY if event.kind == EventKind.OUTBOX_LOSS else priority_of(event.kind)
    return (
        seq,
        int(priority),
        event.kind,
        event.ts.timestamp(),
        len(body) + len(event.kind) + ROW_OVERHEAD_BYTES,
        zlib.crc32(body),
        body,
    )


def _v1_row_body(row: tuple[object, ...], loss_device_id: str) -> NewEvent:
    """A schema 1 row as a new event, or a corrupt-loss record if it is no longer a valid event."""
    seq, event_id, device_id, kind, _priority, ts, payload = row
    try:
        event = wire.Event(
            event_id=UUID(str(event_id)),
            store_id="probe",
            gateway_id="probe",
            stream=UUID(int=0),
            seq=int(str(seq)),
            device_id=str(device_id),
            kind=str(kind),
            ts=datetime.fromisoformat(str(ts)),
            payload=json.loads(str(payload)),
        )
        return NewEvent(
            device_id=event.device_id,
            kind=event.kind,
            ts=event.ts,
            payload_json=encode_json(event.payload),
            event_id=str(event.event_id),
        )
    except (ValidationError, ValueError) as err:
        loss = DataLoss(
            ranges=[SeqRange(first=int(str(seq)), last=int(str(seq)))],
            count=1,
            reason="corrupt",
            detail=f"stored {str(kind)[:64]} event is not a valid event: {str(err)[:300]}",
            by_kind={str(kind)[:64]: 1},
        )
        return NewEvent(
            device_id=loss_device_id, kind=EventKind.OUTBOX_LOSS, ts=utc_now(), payload_json=loss.model_dump_json()
        )


class Outbox(SqliteOnItsThread):
    """The agent's SQLite outbox. Async context manager; operations run one at a time on its own thread.

    ``quota`` bounds what it holds (None: unbounded). Loss events it writes itself
    (evictions, ``not_held``) carry ``loss_device_id`` as their device (the agent passes
    its gateway id). ``now`` stamps them.
    """

    thread_name = "outbox"
    # Each operation updates the in-memory mirrors itself, after its commit, on the thread: a caller cancelled
    # meanwhile cannot leave them disagreeing with the file.

    def __init__(
        self,
        *,
        path: Path,
        quota: Quota | None = None,
        loss_device_id: str = "gateway",
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.path = path
        self.quota = quota
        self.loss_device_id = loss_device_id
        self._now = now
        super().__init__()
        self._stream: UUID | None = None
        # Mirrors of the state row, changed only after a commit (read from any thread).
        self._last_seq = 0
        self._depth = 0
        self._bytes = 0
        self._acked_through = 0
        self._marks: dict[str, int] = {}
        self._not_held: list[SeqRange] = []
        self._oldest: float | None = None  # ts of the lowest waiting seq, Unix seconds
        self._last_high_seq = 0  # highest seq of a security or sales event (or loss record) appended
        self.appends_total = 0  # transactions that appended events
        self._reserve = reserve_path(path)
        self._page_size = 4096
        self._pages_ceiling: int | None = None  # cap_pages(): a cap below what the disk allows
        self._wal_pages = 0  # wal_autocheckpoint in force
        self._reserve_missing = False  # the reserve file could not be made (logged once until it can)
        self.page_cap = 0  # max_page_count in force: what the disk allows, see _fit_to_disk_sync()
        # Writes that failed because the database could not grow (disk full or page cap), and when
        # the disk filled up (None again once the database has a tenth of its cap free).
        self.disk_full_total = 0
        self.disk_full_since: datetime | None = None

    # ------------------------------------------------------------------ lifecycle

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The outbox holds the store's events until the hub has them: 0600 from creation, and an
            # older agent's 0644 outbox (and its -wal) tightened.
            for file, was in private_sqlite_files(self.path):
                log.warning("outbox_file_made_private", path=str(file), was=f"{was:04o}")
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=1.0)
        except (OSError, sqlite3.Error) as err:
            raise OutboxError(f"cannot open outbox {self.path}: {err}") from err
        try:
            try:
                self._prepare(conn)
            except sqlite3.Error as err:
                # Opening writes the header and state row: on a full disk, with the reserve's room.
                if not (is_disk_full(err) and self._release_reserve()):
                    raise
                self._prepare(conn)
            self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            self._conn = conn
            self._fit_to_disk_sync()
            self._keep_reserve()
        except BaseException as err:
            self._conn = None
            conn.close()
            if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
                raise OutboxError(f"outbox {self.path} is in use by another process") from err
            if isinstance(err, sqlite3.Error):
                raise OutboxError(f"cannot use outbox {self.path}: {err}") from err
            raise
        self._conn = conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        # Exclusive locking before WAL: no -shm file, and no second process can use the outbox.
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxError(f"outbox {self.path} cannot use WAL journal mode (got {mode!r})")
        # FULL: fsync the WAL at every commit. Until the hub acknowledges an event, this file
        # holds its only copy, and a store gateway's everyday failure is a pulled plug: in WAL
        # mode NORMAL survives a process crash (the OS has the pages) but a power cut can undo
        # the last commits, losing those events and handing their seqs out again. Group commit
        # keeps the cost to one fsync per group. Measured on the 2-core dev VM: a 1,000-row
        # commit takes 2.9 ms with FULL against 2.5 ms with NORMAL, a 1-row commit 0.13 ms
        # against 0.01 ms; end to end (record -> Mosquitto -> acked) 28,000-30,000 events/s
        # with FULL against 29,700-31,900 with NORMAL, about 6 %. Acknowledgements are the
        # exception, see _ack_sync.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0] or 0)
            if version > SCHEMA_VERSION:
                # A newer agent's file (this one was rolled back): usable only if that format says so; before any
                # write, so a refused file is left as it was.
                refusal = newer_format_refusal(version, _oldest_reader(conn), path=self.path)
                if refusal is not None:
                    raise OutboxError(refusal)
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('stream', ?)", (str(uuid4()),))
            if version == 1:
                self._migrate_v1(conn)
            conn.execute("INSERT OR IGNORE INTO state VALUES (1, 0, 0, 0, 0)")
            if version <= SCHEMA_VERSION:  # a newer readable format keeps its number and its oldest reader
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('oldest_reader', ?)", (str(OLDEST_READER),)
                )
            stream = conn.execute("SELECT value FROM meta WHERE key = 'stream'").fetchone()[0]
            last_seq, depth, size, acked_through = conn.execute(
                "SELECT last_seq, depth, bytes, acked_through FROM state"
            ).fetchone()
            marks = dict(conn.execute("SELECT device_id, source_seq FROM device_marks").fetchall())
            oldest = self._oldest_sync(conn)
            high = conn.execute(
                f"SELECT MAX(seq) FROM events WHERE priority <= {int(max(HIGH_PRIORITIES))}"  # noqa: S608 (constant)
            ).fetchone()[0]
            not_held = conn.execute("SELECT value FROM meta WHERE key = 'not_held_reported'").fetchone()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._stream = UUID(str(stream))
        self._last_seq, self._depth, self._bytes, self._acked_through = last_seq, depth, size, acked_through
        self._marks = marks
        self._oldest = oldest
        self._last_high_seq = int(high or 0)
        self._not_held = [] if not_held is None else [SeqRange.model_validate(r) for r in json.loads(not_held[0])]

    def _migrate_v1(self, conn: sqlite3.Connection) -> None:
        """Schema 1 kept fields, not JSON: write each waiting event's body once, in this transaction."""
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        last_seq = int(row[0]) if row else 0
        first = conn.execute("SELECT MIN(seq) FROM outbox").fetchone()[0]
        depth = size = 0
        after = 0
        while True:
            rows = conn.execute(
                "SELECT seq, event_id, device_id, kind, priority, ts, payload FROM outbox "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, _SCAN_CHUNK),
            ).fetchall()
            if not rows:
                break
            converted = [_row_of(_v1_row_body(old, self.loss_device_id), int(old[0])) for old in rows]
            conn.executemany(_INSERT, converted)
            depth += len(converted)
            size += sum(new[4] for new in converted)
            after = int(rows[-1][0])
        acked_through = last_seq if first is None else int(first) - 1
        conn.execute("INSERT INTO state VALUES (1, ?, ?, ?, ?)", (last_seq, depth, size, acked_through))
        conn.execute("DROP TABLE outbox")

    # ------------------------------------------------------------------ state

    @property
    def stream(self) -> UUID:
        """The UUID of this outbox's life; stable across restarts, new only if the file is wiped."""
        if self._stream is None:
            raise RuntimeError("Outbox is not open")
        return self._stream

    @property
    def last_seq(self) -> int:
        """The highest seq ever assigned (0 for a new outbox), whether or not it was acknowledged since."""
        return self._last_seq

    @property
    def acked_through(self) -> int:
        """The highest seq the hub has acknowledged (everything up to it is deleted here)."""
        return self._acked_through

    @property
    def size_bytes(self) -> int:
        """Bytes of the waiting events, as counted against ``max_bytes``."""
        return self._bytes

    @property
    def not_held_reported(self) -> list[SeqRange]:
        """Seqs already reported to the hub as ``not_held`` since it last caught up."""
        return list(self._not_held)

    def depth(self) -> int:
        """How many events wait for the hub's acknowledgement."""
        return self._depth

    @property
    def oldest_event_ts(self) -> datetime | None:
        """The ``ts`` of the first waiting event (lowest seq), or None when empty; kept in memory."""
        oldest = self._oldest
        return None if oldest is None else datetime.fromtimestamp(oldest, UTC)

    @property
    def last_high_seq(self) -> int:
        """The highest seq of a waiting-or-sent security or sales event (or loss record) appended."""
        return self._last_high_seq

    @staticmethod
    def _oldest_sync(conn: sqlite3.Connection) -> float | None:
        row = conn.execute("SELECT ts FROM events ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else float(row[0])

    def device_mark(self, device_id: str) -> int | None:
        """The highest ``source_seq`` committed for a device, or None."""
        return self._marks.get(device_id)

    async def oldest_ts(self) -> datetime | None:
        """The ``ts`` of the first waiting event (lowest seq), or None when the outbox is empty, from the file."""
        value = await self._run(lambda: self._oldest_sync(self._db()))
        return None if value is None else datetime.fromtimestamp(value, UTC)

    async def first_seq(self) -> int | None:
        """The lowest waiting seq, or None when the outbox is empty."""

        def query() -> int | None:
            row = self._db().execute("SELECT seq FROM events ORDER BY seq LIMIT 1").fetchone()
            return None if row is None else int(row[0])

        return await self._run(query)

    async def cap_pages(self, pages: int) -> int:
        """Cap the file at ``pages`` pages, below what the disk allows (writes beyond fail as on a full disk).

        For tests and emergencies; returns the cap in force (never below the current size).
        """

        def cap() -> int:
            self._pages_ceiling = int(pages)
            return self._fit_to_disk_sync()

        return await self._run(cap)

    def _fit_to_disk_sync(self) -> int:
        """Set max_page_count to what the disk allows (and cap_pages), so the WAL and the reserve keep their room.

        Without the cap, checkpoints grow the database into the space the WAL needs next, and
        on a full disk not even an eviction can be written.
        """
        conn = self._db()
        files = (self.path, self.path.with_name(self.path.name + "-wal"), self._reserve)
        fit = disk_fit(
            used_bytes=sum(_file_size(file) for file in files), free_bytes=self._free_bytes(), page_size=self._page_size
        )
        cap = fit.page_cap
        if fit.wal_pages != self._wal_pages:
            # A checkpoint truncates the WAL back to its checkpoint size, so one burst does not keep its size.
            conn.execute(f"PRAGMA wal_autocheckpoint = {fit.wal_pages}")
            conn.execute(f"PRAGMA journal_size_limit = {fit.wal_pages * self._page_size}")
            self._wal_pages = fit.wal_pages
        if self._pages_ceiling is not None:
            cap = min(cap, self._pages_ceiling)
        # SQLite never sets it below the current page count; it says what it did.
        self.page_cap = int(conn.execute(f"PRAGMA max_page_count = {int(cap)}").fetchone()[0])
        return self.page_cap

    def _keep_reserve(self) -> bool:
        """Create the reserve file if it is missing (False when the disk has no room for it now)."""
        if _file_size(self._reserve) >= DISK_RESERVE_BYTES:
            return True
        try:
            fd = os.open(self._reserve, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)
            try:
                os.posix_fallocate(fd, 0, DISK_RESERVE_BYTES)
            finally:
                os.close(fd)
        except OSError as err:
            # Half a reserve is no use and takes the space an eviction needs.
            with contextlib.suppress(FileNotFoundError):
                self._reserve.unlink()
            if not self._reserve_missing:
                log.warning("outbox_reserve_not_kept", path=str(self._reserve), error=str(err))
            self._reserve_missing = True
            return False
        if self._reserve_missing:
            log.info("outbox_reserve_kept_again", path=str(self._reserve))
        self._reserve_missing = False
        return True

    def _release_reserve(self) -> bool:
        """Delete the reserve file, giving its space back to the filesystem; False if there was none."""
        try:
            self._reserve.unlink()
        except FileNotFoundError:
            return False
        return True

    def _checkpoint_truncate(self) -> bool:
        """Copy the WAL into the database and truncate it to zero bytes; False when the disk is too full for that."""
        try:
            busy = self._db().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as err:
            if not is_disk_full(err):
                raise
            return False
        # Busy never happens with the exclusive lock, but then the WAL was not reset.
        return not busy

    def wal_bytes(self) -> int:
        """The WAL file's size now (bytes on the disk beside the database)."""
        return _file_size(self.path.with_name(self.path.name + "-wal"))

    # ------------------------------------------------------------------ appending

    async def append(self, events: Sequence[NewEvent], *, make_room: int = 0) -> AppendResult:
        """Append events in one transaction, giving them consecutive seqs in order.

        Readings of a numbering device at or below its mark are dropped as duplicates.
        If the quota would be exceeded, the lowest-priority, oldest events are evicted and
        ``outbox.loss`` events naming them appended, in the same transaction.
        ``make_room`` evicts that many more first, at least 5 % of the backlog (after SQLITE_FULL,
        to free pages). On SQLITE_FULL the outbox first makes what room it can without evicting
        (:meth:`_with_room`) and retries. Raises OutboxFullError when nothing more may be evicted,
        and sqlite3.Error (SQLITE_FULL when only an eviction can help).
        """
        if not events and make_room <= 0:
            return AppendResult(stored=0)
        return await self._run(self._with_room, partial(self._append_sync, list(events), make_room))

    def _append_sync(self, events: list[NewEvent], make_room: int) -> AppendResult:
        conn = self._db()
        if make_room > 0:
            # Deleting the oldest rows frees whole pages only as leaves empty: evict a share at once,
            # rather than paying a failed transaction and a checkpoint for every batch.
            make_room = max(make_room, int(self._depth * DISK_FULL_EVICTION_SHARE))
        kept: list[NewEvent] = []
        marks: dict[str, int] = {}
        for event in events:
            if event.source_seq is not None:
                mark = marks.get(event.device_id, self._marks.get(event.device_id))
                if mark is not None and event.source_seq <= mark:
                    continue
                marks[event.device_id] = event.source_seq
            kept.append(event)
        duplicates = len(events) - len(kept)
        # Bodies before the transaction: an invalid event fails the append before anything is written.
        seq = self._last_seq
        rows = [_row_of(event, seq + index) for index, event in enumerate(kept, start=1)]
        seq += len(rows)
        depth = self._depth + len(rows)
        size = self._bytes + sum(row[4] for row in rows)
        victims: list[Victim] = []
        loss_rows: list[_Row] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            if make_room > 0:
                # Before the insert, so that the insert can reuse the freed pages.
                victims += self._evict(conn, events=make_room, size=0)
            if rows:
                conn.executemany(_INSERT, rows)
            if marks:
                conn.executemany(
                    "INSERT INTO device_marks (device_id, source_seq) VALUES (?, ?) "
                    "ON CONFLICT (device_id) DO UPDATE SET source_seq = excluded.source_seq",
                    marks.items(),
                )
            depth -= len(victims)
            size -= sum(victim.size for victim in victims)
            quota = self.quota
            if quota is not None and (depth > quota.max_events or size > quota.max_bytes):
                # Down to the low-water mark, with room for the loss record itself.
                low_events = quota.max_events - max(1, int(quota.max_events * EVICTION_HEADROOM))
                low_bytes = quota.max_bytes - max(1, int(quota.max_bytes * EVICTION_HEADROOM))
                need_events = depth - low_events + 1 if depth > quota.max_events else 0
                need_size = size - low_bytes + LOSS_ROW_BYTES if size > quota.max_bytes else 0
                detail = DISK_FULL_DETAIL if make_room > 0 else self._quota_detail()
                while True:
                    more = self._evict(conn, events=need_events, size=need_size)
                    victims += more
                    depth -= len(more)
                    size -= sum(victim.size for victim in more)
                    loss_rows = self._loss_rows(victims, reason="evicted", detail=detail, after=seq)
                    over_events = depth + len(loss_rows) - quota.max_events
                    over_size = size + sum(row[4] for row in loss_rows) - quota.max_bytes
                    if over_events <= 0 and over_size <= 0:
                        break
                    if not more:
                        raise OutboxFullError(
                            f"outbox quota ({quota.max_events:,} events, {quota.max_bytes:,} bytes) is full of "
                            "events that may not be evicted (loss records)"
                        )
                    need_events, need_size = max(over_events, 0), max(over_size, 0)
            elif victims:
                loss_rows = self._loss_rows(victims, reason="evicted", detail=DISK_FULL_DETAIL, after=seq)
            if loss_rows:
                conn.executemany(_INSERT, loss_rows)
                seq += len(loss_rows)
                depth += len(loss_rows)
                size += sum(row[4] for row in loss_rows)
            conn.execute(_SAVE_STATE, (seq, depth, size, self._acked_through))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        high = max((row[0] for row in (*rows, *loss_rows) if row[1] <= max(HIGH_PRIORITIES)), default=0)
        self._last_seq, self._depth, self._bytes = seq, depth, size
        self._last_high_seq = max(self._last_high_seq, high)
        if victims:
            self._oldest = self._oldest_sync(conn)
        elif self._oldest is None and rows:
            self._oldest = rows[0][3]
        self._marks.update(marks)
        self.appends_total += 1
        evicted = Counter(Priority(victim.priority) for victim in victims)
        return AppendResult(
            stored=len(rows),
            duplicates=duplicates,
            first_seq=rows[0][0] if rows else None,
            evicted=dict(evicted),
            loss_events=len(loss_rows),
        )

    def _with_room(self, write: Callable[[], T]) -> T:
        """Run one write transaction; when the database cannot grow, make what room the disk has and retry.

        In order: the WAL checkpointed into the database and truncated to zero bytes (its space
        back to the filesystem) and the page cap measured again; then, when the filesystem
        itself is full, the write once more with the reserve file's space for its WAL frames,
        checkpointed in place at once and the reserve taken back. If that does not do it, the
        SQLITE_FULL error is raised: only an eviction (``make_room``) can free pages then.
        """
        try:
            result = write()
        except sqlite3.Error as err:
            if not is_disk_full(err):
                raise
            result = self._with_room_on_full_disk(write)
        if self.disk_full_since is not None:
            self._check_disk_full_over()
        return result

    def _with_room_on_full_disk(self, write: Callable[[], T]) -> T:
        self.disk_full_total += 1
        if self.disk_full_since is None:
            self.disk_full_since = self._now()
            log.warning(
                "outbox_disk_full",
                path=str(self.path),
                page_cap=self.page_cap,
                wal_bytes=self.wal_bytes(),
                free_bytes=self._free_bytes(),
            )
        if not self._checkpoint_truncate():
            # Too full even to checkpoint (the database file must grow to take the WAL's pages).
            self._release_reserve()
            self._checkpoint_truncate()
        self._fit_to_disk_sync()
        try:
            return write()
        except sqlite3.Error as err:
            if not is_disk_full(err) or self._free_bytes() >= wal_room_bytes(self._wal_pages, self._page_size):
                raise  # the page cap: only an eviction helps
        # The filesystem is full (another program, or a cap measured when it had more room): the
        # reserve's space takes this write's WAL frames, and the checkpoint writes them in place
        # (the cap keeps the database from growing), which gives the space back for the reserve.
        self._release_reserve()
        try:
            return write()
        finally:
            self._checkpoint_truncate()
            self._keep_reserve()

    def _free_bytes(self) -> int:
        stat = os.statvfs(self.path.parent)
        return stat.f_bavail * stat.f_frsize

    def _check_disk_full_over(self) -> None:
        """End the disk-full episode once the database has a tenth of its cap free and the WAL its room."""
        conn = self._db()
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free_pages = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        if (self.page_cap - pages + free_pages) * 10 >= self.page_cap and self._free_bytes() >= wal_room_bytes(
            self._wal_pages, self._page_size
        ):
            log.info("outbox_disk_full_over", since=self.disk_full_since.isoformat() if self.disk_full_since else None)
            self.disk_full_since = None

    def _quota_detail(self) -> str:
        quota = self.quota
        assert quota is not None
        return f"outbox quota full ({quota.max_events:,} events, {quota.max_bytes:,} bytes)"

    def _evict(self, conn: sqlite3.Connection, *, events: int, size: int) -> list[Victim]:
        """Delete the lowest-priority, oldest events until ``events`` and ``size`` are freed (or none is left)."""
        victims: list[Victim] = []
        for priority in EVICTION_ORDER:
            after = 0
            while events > 0 or size > 0:
                rows = conn.execute(
                    "SELECT seq, kind, size FROM events WHERE priority = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (int(priority), after, _SCAN_CHUNK),
                ).fetchall()
                if not rows:
                    break
                for seq, kind, row_size in rows:
                    after = seq
                    if kind == EventKind.OUTBOX_LOSS:  # the record of an earlier loss is never evicted
                        continue
                    victims.append(Victim(seq, int(priority), kind, row_size))
                    events -= 1
                    size -= row_size
                    if events <= 0 and size <= 0:
                        break
        conn.executemany("DELETE FROM events WHERE seq = ?", [(victim.seq,) for victim in victims])
        return victims

    def _loss_rows(self, victims: Sequence[Victim], *, reason: str, detail: str, after: int) -> list[_Row]:
        ordered = sorted(victims, key=lambda victim: victim.seq)
        kinds = {victim.seq: victim.kind for victim in ordered}
        ranges = seq_ranges(victim.seq for victim in ordered)
        return self._loss_rows_of_ranges(ranges, reason=reason, detail=detail, after=after, kinds=kinds)

    def _loss_rows_of_ranges(
        self,
        ranges: Sequence[SeqRange],
        *,
        reason: str,
        detail: str,
        after: int,
        kinds: dict[int, str] | None = None,
    ) -> list[_Row]:
        now = self._now()
        rows: list[_Row] = []
        for start in range(0, len(ranges), MAX_LOSS_RANGES):
            chunk = list(ranges[start : start + MAX_LOSS_RANGES])
            by_kind: Counter[str] = Counter()
            if kinds is not None:
                for r in chunk:
                    by_kind.update(kinds[seq] for seq in range(r.first, r.last + 1))
            loss = DataLoss.model_validate(
                {
                    "ranges": chunk,
                    "count": sum(r.size for r in chunk),
                    "reason": reason,
                    "detail": detail[:500],
                    "by_kind": dict(by_kind),
                }
            )
            event = NewEvent(
                device_id=self.loss_device_id, kind=EventKind.OUTBOX_LOSS, ts=now, payload_json=loss.model_dump_json()
            )
            rows.append(_row_of(event, after + len(rows) + 1))
        return rows

    async def report_not_held(self, ranges: Sequence[SeqRange], *, detail: str) -> int:
        """Append ``not_held`` loss events for the seqs of ``ranges`` not reported before; returns how many events.

        The reported seqs are remembered in the same transaction, so each is reported once
        until :meth:`forget_not_held` (the hub caught up again).
        """
        return await self._run(self._with_room, partial(self._report_not_held_sync, merge_ranges(ranges), detail))

    def _report_not_held_sync(self, ranges: list[SeqRange], detail: str) -> int:
        fresh = subtract_ranges(ranges, self._not_held)
        if not fresh:
            return 0
        conn = self._db()
        rows = self._loss_rows_of_ranges(fresh, reason="not_held", detail=detail, after=self._last_seq)
        reported = merge_ranges([*self._not_held, *fresh])
        seq, depth, size = self._last_seq + len(rows), self._depth + len(rows), self._bytes + sum(r[4] for r in rows)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT, rows)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('not_held_reported', ?)",
                (json.dumps([r.model_dump() for r in reported]),),
            )
            conn.execute(_SAVE_STATE, (seq, depth, size, self._acked_through))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._last_seq, self._depth, self._bytes, self._not_held = seq, depth, size, reported
        self._last_high_seq = seq
        if self._oldest is None:
            self._oldest = rows[0][3]
        return len(rows)

    async def forget_not_held(self) -> None:
        """The hub holds everything acknowledged again: a later regression is reported afresh."""

        def forget() -> None:
            self._db().execute("DELETE FROM meta WHERE key = 'not_held_reported'")
            self._not_held = []

        if self._not_held:
            await self._run(forget)

    # ------------------------------------------------------------------ reading

    async def read_after(self, seq: int, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` waiting events with a seq above ``seq``, in seq order."""
        rows, _ = await self.read_for_send(after=seq, ahead_through=seq, limit=limit, ahead_limit=0)
        return rows

    async def read_for_send(
        self, *, after: int, ahead_through: int, limit: int, ahead_limit: int, blocked_by_low: bool = True
    ) -> tuple[list[OutboxRow], list[OutboxRow]]:
        """What the sender publishes next, in one trip to the database: ``(backlog, ahead)``.

        ``backlog``: up to ``limit`` events after ``after`` in seq order, leaving out
        security and sales events up to ``ahead_through`` (already sent ahead).
        ``ahead``: up to ``ahead_limit`` security and sales events beyond both, in seq order,
        to be sent before the backlog, when less important events stand in their way: the
        backlog read holds some and goes on beyond (with ``limit`` 0, when ``blocked_by_low``).
        A backlog of nothing but security and sales events simply goes in order.
        """
        return await self._run(self._read_for_send_sync, after, ahead_through, limit, ahead_limit, blocked_by_low)

    def _read_for_send_sync(
        self, after: int, ahead_through: int, limit: int, ahead_limit: int, blocked_by_low: bool
    ) -> tuple[list[OutboxRow], list[OutboxRow]]:
        conn = self._db()
        high = int(max(HIGH_PRIORITIES))
        backlog: list[OutboxRow] = []
        if limit > 0:
            rows = conn.execute(
                "SELECT seq, priority, body, crc FROM events WHERE seq > ? AND (priority > ? OR seq > ?) "
                "ORDER BY seq LIMIT ?",
                (after, high, ahead_through, limit),
            ).fetchall()
            backlog = [OutboxRow(seq, priority, body, zlib.crc32(body) == crc) for seq, priority, body, crc in rows]
            blocked_by_low = len(backlog) == limit and any(row.priority > high for row in backlog)
        ahead: list[OutboxRow] = []
        if ahead_limit > 0 and blocked_by_low and self._last_high_seq > max(ahead_through, after):
            start = max(backlog[-1].seq if backlog else after, ahead_through)
            found = []
            # One index range per priority (a single "priority <= 1" range would scan every
            # high-priority row below ``start`` as well).
            for priority in HIGH_PRIORITIES:
                found += conn.execute(
                    "SELECT seq, priority, body, crc FROM events WHERE priority = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (int(priority), start, ahead_limit),
                ).fetchall()
            found.sort()
            ahead = [
                OutboxRow(seq, priority, body, zlib.crc32(body) == crc)
                for seq, priority, body, crc in found[:ahead_limit]
            ]
        return backlog, ahead

    async def read_ranges(self, ranges: Sequence[SeqRange], *, limit: int) -> list[OutboxRow]:
        """Waiting events whose seqs lie in ``ranges``, in seq order, at most ``limit``."""

        def query() -> list[OutboxRow]:
            conn = self._db()
            found: list[OutboxRow] = []
            for r in merge_ranges(ranges):
                if len(found) >= limit:
                    break
                rows = conn.execute(
                    "SELECT seq, priority, body, crc FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
                    (r.first, r.last, limit - len(found)),
                ).fetchall()
                found += [OutboxRow(seq, priority, body, zlib.crc32(body) == crc) for seq, priority, body, crc in rows]
            return found

        return await self._run(query)

    # ------------------------------------------------------------------ acknowledging

    async def ack_through(self, seq: int) -> int:
        """Delete every event with a seq up to ``seq`` (the hub stored them); returns how many went."""
        return await self._run(self._with_room, partial(self._ack_sync, seq))

    def _ack_sync(self, through: int) -> int:
        conn = self._db()
        # Not fsynced: losing an acknowledgement to a power cut only means resending events the
        # hub already has (it stores by event_id, idempotently). The next FULL commit syncs the
        # WAL up to and including it, so the order of what is durable never changes.
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                sizes = conn.execute("DELETE FROM events WHERE seq <= ? RETURNING size", (through,)).fetchall()
                deleted = len(sizes)
                depth, size = self._depth - deleted, self._bytes - sum(row[0] for row in sizes)
                acked_through = max(self._acked_through, min(through, self._last_seq))
                conn.execute(_SAVE_STATE, (self._last_seq, depth, size, acked_through))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute("PRAGMA synchronous=FULL")
        self._depth, self._bytes, self._acked_through = depth, size, acked_through
        if deleted:
            self._oldest = self._oldest_sync(conn)
        return deleted
