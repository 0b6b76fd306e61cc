"""Contract of the SQLite outbox, against real files in tmp_path, with restarts."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from uuid import RFC_4122, UUID, uuid4

import pytest

from edge_agent.outbox import (
    OLDEST_READER,
    SCHEMA_VERSION,
    NewEvent,
    Outbox,
    OutboxError,
    OutboxFullError,
    OutboxRow,
    Quota,
    event_json,
    identity_prefix,
    is_disk_full,
    merge_ranges,
    new_event_id,
    seq_ranges,
    subtract_ranges,
)
from storegate import wire
from storegate.wire import EventKind, Priority, SeqRange

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def new_event(
    n: int, *, kind: str = "environment.sample", device_id: str | None = None, source_seq: int | None = None
) -> NewEvent:
    """A test event; ``n`` shows up in its ts and payload."""
    return NewEvent.of(
        device_id=device_id or f"dev-{n % 3}",
        kind=kind,
        ts=T0 + timedelta(seconds=n),
        payload={"n": n, "tags": ["a"]},
        source_seq=source_seq,
    )


def seqs(rows: Sequence[OutboxRow]) -> list[int]:
    return [row.seq for row in rows]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "gateway" / "outbox.sqlite3"


async def test_append_assigns_consecutive_seqs_from_one_and_stores_the_event_json(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        assert (outbox.last_seq, outbox.depth()) == (0, 0)
        events = [new_event(0), new_event(1, kind="door.contact"), new_event(2, kind="sale.completed")]
        result = await outbox.append(events)
        assert (result.stored, result.first_seq, result.duplicates, result.evicted) == (3, 1, 0, {})
        rows = await outbox.read_after(0, 10)
        stream = outbox.stream
    assert seqs(rows) == [1, 2, 3]
    assert [row.priority for row in rows] == [Priority.TELEMETRY, Priority.SECURITY, Priority.SALES]
    assert all(row.intact for row in rows)
    prefix = identity_prefix(store_id="store-1", gateway_id="gw-1", stream=stream)
    for seq, (event, row) in enumerate(zip(events, rows, strict=True), start=1):
        assert row.fields() == {
            "event_id": str(event.event_id),
            "seq": seq,
            "device_id": event.device_id,
            "kind": event.kind,
            "ts": event.ts.isoformat(),
            "payload": {"n": seq - 1, "tags": ["a"]},
        }
        # Spliced with the gateway's identity, the stored JSON is a valid wire event as it is.
        wire_event = wire.Event.model_validate_json(event_json(prefix, row.body))
        assert (wire_event.store_id, wire_event.gateway_id, wire_event.stream) == ("store-1", "gw-1", stream)
        assert (str(wire_event.event_id), wire_event.seq, wire_event.ts) == (event.event_id, seq, event.ts)


async def test_timestamps_are_stored_in_utc(path: Path) -> None:
    local = datetime(2025, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    async with Outbox(path=path) as outbox:
        await outbox.append([NewEvent.of(device_id="d", kind="door.contact", ts=local, payload={})])
        (row,) = await outbox.read_after(0, 1)
        assert await outbox.oldest_ts() == local
    assert row.fields()["ts"] == "2025-03-01T12:00:00+00:00"


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (NewEvent.of(device_id="d", kind="a.b", ts=datetime(2025, 1, 1), payload={}), "naive"),
        (NewEvent.of(device_id='d"', kind="a.b", ts=T0, payload={}), "forbids"),
    ],
)
async def test_invalid_events_are_refused_before_anything_is_written(path: Path, bad: NewEvent, why: str) -> None:
    async with Outbox(path=path) as outbox:
        with pytest.raises(ValueError, match=why):
            await outbox.append([new_event(0), bad])
        assert (outbox.depth(), outbox.last_seq) == (0, 0)


def test_payloads_that_are_not_json_are_refused() -> None:
    with pytest.raises(ValueError, match="JSON"):
        NewEvent.of(device_id="d", kind="a.b", ts=T0, payload={"v": float("nan")})


async def test_restart_keeps_rows_stream_seq_and_counters(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        stream = outbox.stream
        await outbox.append([new_event(n) for n in range(5)])
        rows = await outbox.read_after(0, 100)
        size = outbox.size_bytes
    async with Outbox(path=path) as outbox:
        assert outbox.stream == stream
        assert (outbox.depth(), outbox.last_seq, outbox.size_bytes) == (5, 5, size)
        assert await outbox.read_after(0, 100) == rows
        assert (await outbox.append([new_event(5)])).first_seq == 6


async def test_a_wiped_outbox_gets_a_new_stream(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        first = outbox.stream
    path.unlink()
    async with Outbox(path=path) as outbox:
        assert outbox.stream != first
        assert outbox.last_seq == 0


async def test_seq_is_never_reused_after_every_row_is_acknowledged(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        await outbox.append([new_event(n) for n in range(3)])
        assert await outbox.ack_through(3) == 3
        assert (outbox.depth(), outbox.size_bytes, outbox.acked_through) == (0, 0, 3)
        assert (await outbox.append([new_event(3)])).first_seq == 4
        assert await outbox.ack_through(4) == 1
    async with Outbox(path=path) as outbox:
        assert (outbox.depth(), outbox.last_seq, outbox.acked_through) == (0, 4, 4)
        assert (await outbox.append([new_event(4)])).first_seq == 5


async def test_ack_deletes_only_up_to_its_seq(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        await outbox.append([new_event(n) for n in range(10)])
        assert await outbox.ack_through(4) == 4
        assert await outbox.ack_through(4) == 0  # idempotent
        assert await outbox.ack_through(2) == 0  # stale
        assert (outbox.depth(), outbox.acked_through) == (6, 4)
        assert seqs(await outbox.read_after(0, 100)) == list(range(5, 11))
        assert await outbox.first_seq() == 5
        assert await outbox.oldest_ts() == T0 + timedelta(seconds=4)


async def test_read_after_pages_in_seq_order(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        await outbox.append([new_event(n) for n in range(10)])
        assert seqs(await outbox.read_after(0, 4)) == [1, 2, 3, 4]
        assert seqs(await outbox.read_after(4, 4)) == [5, 6, 7, 8]
        assert seqs(await outbox.read_after(8, 4)) == [9, 10]
        assert await outbox.read_after(10, 4) == []
        assert await outbox.read_after(0, 0) == []


async def test_the_sender_reads_the_backlog_and_high_priority_events_ahead_of_it(path: Path) -> None:
    kinds = ["environment.reading"] * 10
    kinds[3], kinds[6], kinds[8] = "door.contact", "sale.completed", "device.online"
    async with Outbox(path=path) as outbox:
        await outbox.append([new_event(n, kind=kind) for n, kind in enumerate(kinds)])
        backlog, ahead = await outbox.read_for_send(after=0, ahead_through=0, limit=3, ahead_limit=10)
        assert (seqs(backlog), seqs(ahead)) == ([1, 2, 3], [4, 7])
        # Next round: the backlog skips what went ahead; nothing is left to send ahead.
        backlog, ahead = await outbox.read_for_send(after=3, ahead_through=7, limit=3, ahead_limit=10)
        assert (seqs(backlog), seqs(ahead)) == ([5, 6, 8], [])
        # A backlog that fits in one read needs no lane ahead of it.
        backlog, ahead = await outbox.read_for_send(after=0, ahead_through=0, limit=20, ahead_limit=10)
        assert (seqs(backlog), ahead) == (list(range(1, 11)), [])
        # A full window still lets high-priority events through (unless the backlog is as important).
        backlog, ahead = await outbox.read_for_send(after=2, ahead_through=0, limit=0, ahead_limit=1)
        assert (backlog, seqs(ahead)) == ([], [4])
        backlog, ahead = await outbox.read_for_send(
            after=2, ahead_through=0, limit=0, ahead_limit=1, blocked_by_low=False
        )
        assert (backlog, ahead) == ([], [])


async def test_a_backlog_of_sales_events_goes_in_order(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        await outbox.append([new_event(n, kind="sale.item") for n in range(10)])
        backlog, ahead = await outbox.read_for_send(after=0, ahead_through=0, limit=3, ahead_limit=10)
        assert (seqs(backlog), ahead) == ([1, 2, 3], [])


async def test_read_ranges(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        await outbox.append([new_event(n) for n in range(10)])
        await outbox.ack_through(2)
        ranges = [SeqRange(first=1, last=4), SeqRange(first=8, last=20)]
        assert seqs(await outbox.read_ranges(ranges, limit=10)) == [3, 4, 8, 9, 10]
        assert seqs(await outbox.read_ranges(ranges, limit=3)) == [3, 4, 8]


async def test_empty_outbox(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        assert (await outbox.append([])).stored == 0
        assert await outbox.oldest_ts() is None
        assert await outbox.first_seq() is None
        assert await outbox.ack_through(100) == 0
        assert outbox.acked_through == 0  # never beyond what it had


async def test_one_append_is_one_transaction(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        await outbox.append([new_event(n) for n in range(500)])
        await outbox.append([new_event(n) for n in range(500, 510)])
        assert (outbox.appends_total, outbox.depth()) == (2, 510)


async def test_concurrent_appends_are_serialised(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        batches = [[new_event(10 * c + n) for n in range(5)] for c in range(20)]
        results = await asyncio.gather(*(outbox.append(batch) for batch in batches))
        firsts = sorted(result.first_seq or 0 for result in results)
        assert firsts == list(range(1, 101, 5)), "one append's events are contiguous"
        by_seq = {row.seq: row.fields()["event_id"] for row in await outbox.read_after(0, 1000)}
        expected = {
            (result.first_seq or 0) + i: str(event.event_id)
            for result, batch in zip(results, batches, strict=True)
            for i, event in enumerate(batch)
        }
        assert by_seq == expected
        assert outbox.depth() == 100


async def test_appends_and_acks_interleaved_keep_depth_and_size_exact(path: Path) -> None:
    async with Outbox(path=path) as outbox:

        async def producer() -> None:
            for n in range(20):
                await outbox.append([new_event(n), new_event(n)])

        async def acker() -> None:
            for through in range(0, 40, 3):
                await outbox.ack_through(through)

        await asyncio.gather(producer(), acker())
        remaining = await outbox.read_after(0, 1000)
        assert outbox.depth() == len(remaining)
        size = outbox.size_bytes
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*), SUM(size) FROM events").fetchone() == (len(remaining), size)
    conn.close()
    async with Outbox(path=path) as outbox:
        assert (outbox.depth(), outbox.size_bytes) == (len(remaining), size)


async def test_a_cancelled_append_leaves_the_outbox_and_its_counters_consistent(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        task = asyncio.create_task(outbox.append([new_event(n) for n in range(50)]))
        await asyncio.sleep(0)  # let the append start before cancelling it
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stored = await outbox.read_after(0, 1000)
        assert outbox.depth() == len(stored)
        assert outbox.last_seq == (stored[-1].seq if stored else 0)


async def test_replayed_device_readings_are_dropped_and_marks_survive_a_restart(path: Path) -> None:
    def reading(n: int, device_id: str = "scale-1") -> NewEvent:
        return new_event(n, kind="scale.weight", device_id=device_id, source_seq=n)

    async with Outbox(path=path) as outbox:
        result = await outbox.append([reading(1), reading(2), reading(2), reading(1, "scale-2"), new_event(9)])
        assert (result.stored, result.duplicates) == (4, 1)
        result = await outbox.append([reading(1), reading(2), reading(3)])
        assert (result.stored, result.duplicates) == (1, 2)
        assert (outbox.device_mark("scale-1"), outbox.device_mark("scale-2"), outbox.device_mark("x")) == (3, 1, None)
    async with Outbox(path=path) as outbox:
        assert outbox.device_mark("scale-1") == 3
        result = await outbox.append([reading(3), reading(4)])
        assert (result.stored, result.duplicates, outbox.depth()) == (1, 1, 6)


async def test_a_full_quota_evicts_telemetry_first_oldest_first_and_records_the_loss(path: Path) -> None:
    quota = Quota(max_events=20, max_bytes=10**9)
    async with Outbox(path=path, quota=quota, loss_device_id="gw-1") as outbox:
        await outbox.append([new_event(n) for n in range(5)])  # telemetry 1..5
        await outbox.append([new_event(n, kind="door.contact") for n in range(5, 10)])  # security 6..10
        await outbox.append([new_event(n, kind="sale.item") for n in range(10, 15)])  # sales 11..15
        await outbox.append([new_event(n, kind="device.online") for n in range(15, 18)])  # device 16..18
        await outbox.append([new_event(n) for n in range(18, 20)])  # telemetry 19, 20: full now
        assert outbox.depth() == 20
        result = await outbox.append([new_event(20), new_event(21)])  # 21, 22
        # Down to 19 (1 % below the quota) with the loss record: 22 + 1 - 19 = 4 telemetry events go, the oldest.
        assert (result.stored, result.evicted, result.loss_events) == (2, {Priority.TELEMETRY: 4}, 1)
        assert outbox.depth() == 19
        left = await outbox.read_after(0, 100)
        assert seqs(left) == [5, *range(6, 19), 19, 20, 21, 22, 23]
        loss = wire.DataLoss.model_validate(left[-1].fields()["payload"])
        assert loss.ranges == [SeqRange(first=1, last=4)]
        assert (loss.count, loss.reason, loss.by_kind) == (4, "evicted", {"environment.sample": 4})
        assert left[-1].fields()["device_id"] == "gw-1"
        assert left[-1].priority == Priority.SECURITY, "a loss record travels ahead of the backlog"

        # Telemetry gone: device status next, then sales; security last, and never the loss record.
        await outbox.append([new_event(n, kind="door.contact") for n in range(30, 40)])
        kinds = [row.fields()["kind"] for row in await outbox.read_after(0, 100)]
        assert "environment.sample" not in kinds
        assert "device.online" not in kinds
        assert kinds.count("door.contact") == 15
        assert kinds.count(EventKind.OUTBOX_LOSS) == 2
        assert outbox.depth() <= 20


async def test_the_byte_quota_counts_too(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        await outbox.append([new_event(0)])
        per_event = outbox.size_bytes
    path.unlink()
    quota = Quota(max_events=10**6, max_bytes=per_event * 10 + 5)
    async with Outbox(path=path, quota=quota) as outbox:
        assert (await outbox.append([new_event(n) for n in range(10)])).evicted == {}
        result = await outbox.append([new_event(10, kind="door.contact")])
        assert set(result.evicted) == {Priority.TELEMETRY}
        assert result.loss_events == 1
        assert outbox.size_bytes <= quota.max_bytes


async def test_evictions_beyond_a_thousand_ranges_take_several_loss_records(path: Path) -> None:
    kinds = ["environment.sample", "door.contact"] * 1100  # every telemetry event is its own range
    async with Outbox(path=path, quota=Quota(max_events=2200, max_bytes=10**9)) as outbox:
        await outbox.append([new_event(n, kind=kind) for n, kind in enumerate(kinds)])
        result = await outbox.append([new_event(n, kind="door.contact") for n in range(1050)])
        evicted = result.evicted[Priority.TELEMETRY]
        assert result.evicted == {Priority.TELEMETRY: evicted}
        assert evicted > 1000
        assert result.loss_events == 2
        rows = await outbox.read_after(outbox.last_seq - 2, 10)
        losses = [wire.DataLoss.model_validate(row.fields()["payload"]) for row in rows]
        assert [len(loss.ranges) for loss in losses] == [1000, evicted - 1000]
        assert sum(loss.count for loss in losses) == evicted
        assert outbox.depth() <= 2200


async def test_a_quota_full_of_loss_records_refuses_the_append(path: Path) -> None:
    async with Outbox(path=path, quota=Quota(max_events=10, max_bytes=10**9)) as outbox:
        for n in range(10):
            await outbox.report_not_held([SeqRange(first=1000 + 2 * n, last=1000 + 2 * n)], detail="test")
        with pytest.raises(OutboxFullError, match="may not be evicted"):
            await outbox.append([new_event(0)])
        assert outbox.depth() == 10


async def test_sqlite_full_is_recognised_and_making_room_evicts_the_least_important(path: Path) -> None:
    def sized(n: int, kind: str) -> NewEvent:
        return NewEvent.of(device_id="d", kind=kind, ts=T0, payload={"n": n, "blob": "x" * 1500})

    async with Outbox(path=path) as outbox:
        await outbox.append([sized(n, "door.contact") for n in range(20)])
        await outbox.append([sized(n, "environment.sample") for n in range(20, 40)])
        await outbox.cap_pages(1)  # no growth from here on, like a full disk
        big = [
            NewEvent.of(device_id="cam-1", kind="camera.motion", ts=T0, payload={"blob": "x" * 3000}) for _ in range(3)
        ]
        with pytest.raises(sqlite3.OperationalError) as info:
            await outbox.append(big)
        assert is_disk_full(info.value)
        assert outbox.depth() == 40
        result = await outbox.append(big, make_room=30)
        assert result.stored == 3
        assert result.evicted == {Priority.TELEMETRY: 20, Priority.SECURITY: 10}
        loss = wire.DataLoss.model_validate((await outbox.read_after(outbox.last_seq - 1, 1))[0].fields()["payload"])
        assert (loss.count, loss.reason) == (30, "evicted")
        assert loss.detail.startswith("disk full")


async def test_not_held_is_reported_once_until_forgotten(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        assert await outbox.report_not_held([SeqRange(first=5, last=10)], detail="hub restored") == 1
        assert await outbox.report_not_held([SeqRange(first=5, last=10)], detail="again") == 0
        # Only the part not reported before.
        assert await outbox.report_not_held([SeqRange(first=8, last=12)], detail="more") == 1
        rows = await outbox.read_after(0, 10)
        losses = [wire.DataLoss.model_validate(row.fields()["payload"]) for row in rows]
        assert [(loss.ranges, loss.reason) for loss in losses] == [
            ([SeqRange(first=5, last=10)], "not_held"),
            ([SeqRange(first=11, last=12)], "not_held"),
        ]
    async with Outbox(path=path) as outbox:
        assert outbox.not_held_reported == [SeqRange(first=5, last=12)]
        assert await outbox.report_not_held([SeqRange(first=5, last=6)], detail="after restart") == 0
        await outbox.forget_not_held()
        assert await outbox.report_not_held([SeqRange(first=5, last=6)], detail="a new regression") == 1


async def test_a_corrupted_body_is_flagged_when_read(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        await outbox.append([new_event(n) for n in range(3)])
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE events SET body = CAST(replace(CAST(body AS TEXT), '\"n\":1', '\"n\":7') AS BLOB)")
    conn.close()
    async with Outbox(path=path) as outbox:
        assert [row.intact for row in await outbox.read_after(0, 10)] == [True, False, True]


async def test_a_schema_1_outbox_is_migrated_with_its_seqs(path: Path) -> None:
    path.parent.mkdir(parents=True)
    stream = uuid4()
    with sqlite3.connect(path) as conn:
        conn.executescript(
            f"""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL,
                device_id TEXT NOT NULL, kind TEXT NOT NULL, priority INTEGER NOT NULL, ts TEXT NOT NULL,
                payload TEXT NOT NULL);
            INSERT INTO meta VALUES ('stream', '{stream}');
            PRAGMA user_version = 1;
            """
        )
        old = [
            (str(uuid4()), "chiller-1", "environment.reading", 3, T0.isoformat(), '{"quantity": "temperature"}'),
            (str(uuid4()), "door-1", "door.contact", 0, T0.isoformat(), '{"door": "back"}'),
            (str(uuid4()), "door-1", "door.contact", 0, T0.isoformat(), '{"door": "front"}'),
        ]
        conn.executemany(
            "INSERT INTO outbox (event_id, device_id, kind, priority, ts, payload) VALUES (?, ?, ?, ?, ?, ?)", old
        )
        conn.execute("DELETE FROM outbox WHERE seq = 1")  # acknowledged
        conn.execute("INSERT INTO outbox VALUES (4, ?, 'd', 'door.closed', 0, ?, '{}')", (str(uuid4()), T0.isoformat()))
        conn.execute("DELETE FROM outbox WHERE seq = 4")  # acknowledged out of order; last seq stays 4
    conn.close()
    async with Outbox(path=path, loss_device_id="gw-1") as outbox:
        assert (outbox.stream, outbox.last_seq, outbox.depth(), outbox.acked_through) == (stream, 4, 2, 1)
        rows = await outbox.read_after(0, 10)
        assert seqs(rows) == [2, 3]
        assert [row.fields()["event_id"] for row in rows] == [old[1][0], old[2][0]]
        assert rows[0].fields()["payload"] == {"door": "back"}
        assert (await outbox.append([new_event(9)])).first_seq == 5


async def test_a_schema_1_row_that_no_longer_validates_becomes_a_corrupt_loss(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL,
                device_id TEXT NOT NULL, kind TEXT NOT NULL, priority INTEGER NOT NULL, ts TEXT NOT NULL,
                payload TEXT NOT NULL);
            PRAGMA user_version = 1;
            """
        )
        conn.execute(
            "INSERT INTO outbox (event_id, device_id, kind, priority, ts, payload) VALUES (?, ?, ?, ?, ?, ?)",
            (str(uuid4()), "chiller-1", "environment.reading", 3, T0.isoformat(), '{"quantity": "pressure"}'),
        )
    conn.close()
    async with Outbox(path=path, loss_device_id="gw-1") as outbox:
        (row,) = await outbox.read_after(0, 10)
    assert (row.seq, row.fields()["kind"], row.fields()["device_id"]) == (1, EventKind.OUTBOX_LOSS, "gw-1")
    loss = wire.DataLoss.model_validate(row.fields()["payload"])
    assert (loss.ranges, loss.reason, loss.by_kind) == (
        [SeqRange(first=1, last=1)],
        "corrupt",
        {"environment.reading": 1},
    )


def test_range_helpers() -> None:
    def r(first: int, last: int) -> SeqRange:
        return SeqRange(first=first, last=last)

    assert seq_ranges([1, 2, 3, 5, 7, 8]) == [r(1, 3), r(5, 5), r(7, 8)]
    assert seq_ranges([]) == []
    assert merge_ranges([r(5, 6), r(1, 2), r(3, 3), r(6, 9)]) == [r(1, 3), r(5, 9)]
    assert subtract_ranges([r(1, 10), r(20, 22)], [r(3, 4), r(8, 21)]) == [r(1, 2), r(5, 7), r(22, 22)]
    assert subtract_ranges([r(1, 3)], []) == [r(1, 3)]
    assert subtract_ranges([r(1, 3)], [r(1, 5)]) == []


async def test_a_second_outbox_on_the_same_file_is_refused(path: Path) -> None:
    async with Outbox(path=path):
        with pytest.raises(OutboxError, match="in use"):
            async with Outbox(path=path):
                pass


async def test_a_file_that_is_not_a_database_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite, it is a shopping list" * 100)
    with pytest.raises(OutboxError, match=str(path)):
        async with Outbox(path=path):
            pass


def _set_format(path: Path, version: int, oldest_reader: int | None) -> None:
    """Make the file look as a newer agent left it: its format and the oldest reader it declares."""
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("DELETE FROM meta WHERE key = 'oldest_reader'")
        if oldest_reader is not None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('oldest_reader', ?)", (str(oldest_reader),))
    conn.close()


def _format_of(path: Path) -> tuple[int, str | None]:
    with sqlite3.connect(path) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        row = conn.execute("SELECT value FROM meta WHERE key = 'oldest_reader'").fetchone()
    conn.close()
    return int(version), None if row is None else str(row[0])


async def test_an_outbox_records_its_format_and_the_oldest_agent_that_reads_it(path: Path) -> None:
    async with Outbox(path=path):
        pass
    assert _format_of(path) == (SCHEMA_VERSION, str(OLDEST_READER))


async def test_a_rolled_back_agent_goes_on_with_a_newer_format_that_declares_it_readable(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        await outbox.append([new_event(0), new_event(1)])
    _set_format(path, SCHEMA_VERSION + 1, SCHEMA_VERSION)
    async with Outbox(path=path) as outbox:
        assert seqs(await outbox.read_after(0, 10)) == [1, 2]  # nothing lost across the rollback
        await outbox.append([new_event(2)])
    # The newer agent finds its own format again, not one downgraded by the older agent.
    assert _format_of(path) == (SCHEMA_VERSION + 1, str(SCHEMA_VERSION))


@pytest.mark.parametrize("oldest_reader", [None, SCHEMA_VERSION + 1])
async def test_an_outbox_in_a_format_this_agent_cannot_read_is_refused_in_words_and_left_untouched(
    path: Path, oldest_reader: int | None
) -> None:
    async with Outbox(path=path) as outbox:
        await outbox.append([new_event(0)])
    _set_format(path, SCHEMA_VERSION + 1, oldest_reader)
    before = path.read_bytes()
    with pytest.raises(OutboxError, match=f"in format {SCHEMA_VERSION + 1}, which this agent .* cannot read"):
        async with Outbox(path=path):
            pass
    assert path.read_bytes() == before
    assert _format_of(path) == (SCHEMA_VERSION + 1, None if oldest_reader is None else str(oldest_reader))


async def test_the_database_is_in_wal_mode(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        await outbox.append([new_event(0)])
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_operations_need_an_open_outbox(path: Path) -> None:
    outbox = Outbox(path=path)
    with pytest.raises(RuntimeError, match="not open"):
        await outbox.read_after(0, 1)
    with pytest.raises(RuntimeError, match="not open"):
        _ = outbox.stream


def test_event_ids_are_random_version_4_uuids() -> None:
    ids = [new_event_id() for _ in range(2000)]  # several of its 256-id buffers
    assert len(set(ids)) == len(ids)
    for text in ids[:300]:
        parsed = UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, RFC_4122)
