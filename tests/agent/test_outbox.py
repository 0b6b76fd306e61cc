"""Contract of the SQLite outbox, against real files in tmp_path, with restarts."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge_agent.outbox import SCHEMA_VERSION, NewEvent, Outbox, OutboxError
from storegate.wire import Priority

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def new_event(n: int, *, kind: str = "environment.reading") -> NewEvent:
    """A test event; ``n`` shows up in its ts and payload."""
    return NewEvent(device_id=f"dev-{n % 3}", kind=kind, ts=T0 + timedelta(seconds=n), payload={"n": n, "tags": ["a"]})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "gateway" / "outbox.sqlite3"


async def test_append_assigns_consecutive_seqs_from_one_and_keeps_every_field(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        assert (outbox.last_seq, outbox.depth()) == (0, 0)
        events = [new_event(0), new_event(1, kind="door.opened"), new_event(2, kind="sale.completed")]
        stored = await outbox.append(events)
        assert [event.seq for event in stored] == [1, 2, 3]
        read = await outbox.read_after(0, 10)
    assert read == stored
    for event, row in zip(events, read, strict=True):
        assert (row.event_id, row.device_id, row.kind, row.ts, row.payload) == (
            event.event_id,
            event.device_id,
            event.kind,
            event.ts,
            event.payload,
        )
    assert [row.priority for row in read] == [Priority.TELEMETRY, Priority.SECURITY, Priority.SALES]


async def test_timestamps_come_back_as_utc(path: Path) -> None:
    local = datetime(2025, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    async with Outbox(path=path) as outbox:
        await outbox.append([NewEvent(device_id="d", kind="door.opened", ts=local, payload={})])
        (row,) = await outbox.read_after(0, 1)
    assert row.ts == local
    assert row.ts.utcoffset() == timedelta(0)


async def test_naive_timestamps_are_refused_before_anything_is_written(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        with pytest.raises(ValueError, match="naive"):
            await outbox.append(
                [new_event(0), NewEvent(device_id="d", kind="a.b", ts=datetime(2025, 1, 1), payload={})]
            )
        assert (outbox.depth(), outbox.last_seq) == (0, 0)


async def test_restart_keeps_rows_stream_and_seq(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        stream = outbox.stream
        stored = await outbox.append([new_event(n) for n in range(5)])
    async with Outbox(path=path) as outbox:
        assert outbox.stream == stream
        assert (outbox.depth(), outbox.last_seq) == (5, 5)
        assert await outbox.read_after(0, 100) == stored
        assert [event.seq for event in await outbox.append([new_event(5)])] == [6]


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
        assert outbox.depth() == 0
        assert [event.seq for event in await outbox.append([new_event(3)])] == [4]
        assert await outbox.ack_through(4) == 1
    async with Outbox(path=path) as outbox:
        assert (outbox.depth(), outbox.last_seq) == (0, 4)
        assert [event.seq for event in await outbox.append([new_event(4)])] == [5]


async def test_ack_deletes_only_up_to_its_seq(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        await outbox.append([new_event(n) for n in range(10)])
        assert await outbox.ack_through(4) == 4
        assert await outbox.ack_through(4) == 0  # idempotent
        assert await outbox.ack_through(2) == 0  # stale
        assert outbox.depth() == 6
        assert [event.seq for event in await outbox.read_after(0, 100)] == list(range(5, 11))
        assert await outbox.first_seq() == 5
        assert await outbox.oldest_ts() == T0 + timedelta(seconds=4)


async def test_read_after_pages_in_seq_order(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        await outbox.append([new_event(n) for n in range(10)])
        assert [event.seq for event in await outbox.read_after(0, 4)] == [1, 2, 3, 4]
        assert [event.seq for event in await outbox.read_after(4, 4)] == [5, 6, 7, 8]
        assert [event.seq for event in await outbox.read_after(8, 4)] == [9, 10]
        assert await outbox.read_after(10, 4) == []
        assert await outbox.read_after(0, 0) == []


async def test_empty_outbox(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        assert await outbox.append([]) == []
        assert await outbox.oldest_ts() is None
        assert await outbox.first_seq() is None
        assert await outbox.ack_through(100) == 0


async def test_concurrent_appends_are_serialised(path: Path) -> None:
    async with Outbox(path=path) as outbox:
        results = await asyncio.gather(*(outbox.append([new_event(10 * c + n) for n in range(5)]) for c in range(20)))
        for result in results:
            seqs = [event.seq for event in result]
            assert seqs == list(range(seqs[0], seqs[0] + 5)), "one append's events are contiguous"
        all_seqs = sorted(event.seq for result in results for event in result)
        assert all_seqs == list(range(1, 101))
        by_seq = {event.seq: event.event_id for event in await outbox.read_after(0, 1000)}
        assert by_seq == {event.seq: event.event_id for result in results for event in result}
        assert outbox.depth() == 100


async def test_appends_and_acks_interleaved_keep_depth_exact(path: Path) -> None:
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
    async with Outbox(path=path) as outbox:
        assert outbox.depth() == len(remaining)


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


async def test_an_outbox_from_a_newer_agent_is_refused(path: Path) -> None:
    async with Outbox(path=path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(OutboxError, match="schema version"):
        async with Outbox(path=path):
            pass


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
