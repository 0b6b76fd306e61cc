"""The outbox on a small disk: a real 2 MB tmpfs, the agent's writer, and `storegate agent status`.

The filesystem is mounted for each test (root only; in CI a missing mount fails the test).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from device_drivers.base import Reading
from edge_agent.agent import EdgeAgent
from edge_agent.config import load_agent_config
from edge_agent.health import AgentStats, agent_registry, describe_problems
from edge_agent.outbox import (
    DISK_RESERVE_BYTES,
    NewEvent,
    Outbox,
    disk_fit,
    is_disk_full,
    reserve_path,
    wal_room_bytes,
)
from edge_agent.status import (
    STATUS_FILE_BYTES,
    AgentStatusFile,
    agent_status,
    describe_status,
    holds_open,
    overwrite_status,
    read_status,
    status_bytes,
    status_path,
    write_status,
)
from storegate import wire
from storegate.mqtt import MqttSettings
from storegate.wire import EventKind, utc_now
from tests.edge_agent.conftest import GATEWAY, STORE, T0, running
from tests.edge_agent.test_agent import until
from tests.edge_agent.test_status import sample_status
from tests.edge_agent.test_status import write_config as write_status_test_config

DISK_BYTES = 2 * 1024 * 1024
# A deadline, not a speed: a group's flush returns once its events are written, and an outbox that stops
# writing on a full disk (the agent waited 47 s, until the disk was grown) never returns.
FLUSH_DEADLINE_S = 15.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs of its own, unmounted after the test."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the small-disk tests mount a tmpfs: CI must run them as root")
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(mount_point)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True, capture_output=True)


def write_config(tmp_path: Path, outbox: Path, mqtt: MqttSettings) -> Path:
    return write_status_test_config(tmp_path, mqtt, outbox=outbox, outbox_settings="commit_max_events = 200")


def reading(n: int) -> Reading:
    return Reading(
        device_id="chiller-1",
        kind="environment.reading",
        ts=T0 + timedelta(seconds=n),
        payload={"quantity": "temperature", "value": 3.0 + n / 1000, "unit": "Cel", "zone": "chiller-1"},
    )


def fill(disk: Path) -> int:
    """Another program takes every free byte of the disk; returns how many."""
    taken = 0
    with open(disk / "filler", "wb", buffering=0) as filler:
        try:
            while written := filler.write(b"x" * 4096):
                taken += written
        except OSError:
            pass
    return taken


class Hub:
    """Takes what the outbox holds, as the hub would store it, and acknowledges it."""

    def __init__(self) -> None:
        self.events: set[int] = set()
        self.loss_records: set[int] = set()
        self.lost: set[int] = set()

    def take(self, rows: Sequence[tuple[int, Mapping[str, object]]]) -> None:
        for seq, fields in rows:
            if fields["kind"] == EventKind.OUTBOX_LOSS:
                self.loss_records.add(seq)
                loss = wire.DataLoss.model_validate(fields["payload"])
                named = {s for r in loss.ranges for s in range(r.first, r.last + 1)}
                assert len(named) == loss.count
                assert not named & self.lost, "an event is reported lost twice"
                self.lost |= named
            else:
                assert seq not in self.events
                self.events.add(seq)

    async def receive(self, outbox: Outbox, *, at_most: int, ack: bool = True) -> None:
        """Take at most ``at_most`` waiting events and acknowledge them (a hub slower than the store)."""
        rows = await outbox.read_after(outbox.acked_through, at_most)
        self.take([(row.seq, row.fields()) for row in rows])
        if ack and rows:
            await outbox.ack_through(rows[-1].seq)


@pytest.mark.parametrize("other_program_fills_it", [False, True], ids=["outbox-alone", "filled-by-another-program"])
async def test_the_outbox_keeps_writing_on_a_2mb_disk_and_accounts_for_every_event(
    small_disk: Path, tmp_path: Path, unreachable_mqtt: MqttSettings, other_program_fills_it: bool
) -> None:
    outbox_path = small_disk / "outbox.sqlite3"
    agent = EdgeAgent(config=load_agent_config(write_config(tmp_path, outbox_path, unreachable_mqtt)))
    hub = Hub()
    recorded = 0
    max_wal = 0
    async with running(agent):
        await until(lambda: agent.outbox is not None, "the outbox open")
        outbox = agent.outbox
        assert outbox is not None
        # Sized to the disk: the WAL, the reserve and the status file keep their room.
        assert reserve_path(outbox_path).stat().st_size == DISK_RESERVE_BYTES
        assert outbox.page_cap * 4096 < DISK_BYTES - wal_room_bytes(64, 4096) - DISK_RESERVE_BYTES
        for group in range(80):
            if other_program_fills_it and group == 20:
                assert fill(small_disk) > 0
            for _ in range(200):
                await agent.record(reading(recorded))
                recorded += 1
            try:
                await asyncio.wait_for(agent.flush(), FLUSH_DEADLINE_S)
            except TimeoutError:
                pytest.fail(f"the outbox stopped writing at group {group}: nothing written in {FLUSH_DEADLINE_S:.0f} s")
            max_wal = max(max_wal, outbox.wal_bytes())
            if group % 10 == 9:  # the hub acknowledges now and then; meanwhile the backlog grows
                await hub.receive(outbox, at_most=300)
        assert outbox.disk_full_since is not None
        assert any(problem.startswith("outbox disk full since ") for problem in agent.health().problems)
        await hub.receive(outbox, at_most=100_000, ack=False)  # and what still waits
        last_seq = outbox.last_seq
        evicted = agent.stats.evicted
    assert max_wal <= wal_room_bytes(64, 4096), f"the WAL grew to {max_wal:,.0f} bytes"
    # Every seq is an event the hub has, a loss record, or named in exactly one loss record.
    assert evicted > recorded // 2, "a 2 MB disk holds a few thousand events: most were evicted"
    assert len(hub.lost) == evicted
    assert not hub.lost & hub.events
    assert hub.events | hub.loss_records | hub.lost == set(range(1, last_seq + 1))
    assert len(hub.events) + len(hub.lost) == recorded


async def test_agent_status_tells_a_live_agent_on_a_full_disk_from_a_dead_one(
    small_disk: Path, tmp_path: Path, unreachable_mqtt: MqttSettings
) -> None:
    outbox_path = small_disk / "outbox.sqlite3"
    config_path = write_config(tmp_path, outbox_path, unreachable_mqtt)
    agent = EdgeAgent(config=load_agent_config(config_path))
    status_file = status_path(outbox_path)
    async with running(agent):
        await until(status_file.exists, "the first status")
        assert status_file.stat().st_size == STATUS_FILE_BYTES
        n = 0
        while agent.outbox is None or agent.outbox.disk_full_since is None:
            for _ in range(200):
                await agent.record(reading(n))
                n += 1
            await agent.flush()
        fill(small_disk)  # another program takes the rest; the outbox goes on with its reserve
        for _ in range(1000):
            await agent.record(reading(n))
            n += 1
        await agent.flush()
        fill(small_disk)  # and what the outbox's WAL gave back: not even a temporary status file fits now
        filled_at = utc_now()

        def written_since_the_disk_filled() -> tuple[str, int] | None:
            if read_status(status_file).written_at <= filled_at:
                return None
            return agent_status(config_path)

        text, code = await until_value(written_since_the_disk_filled, "a status written in place on the full disk")
        head = text.splitlines()[0]
        assert head.startswith(f"gateway {STORE}/{GATEWAY}: agent running (pid {os.getpid()}")
        assert "; outbox writes going on a full disk: disk full since " in head
        assert "events evicted, recorded as losses" in head
        assert code == 1
        assert not status_file.with_name(status_file.name + ".tmp").exists()
    # Stopped: the last status (written in place, the disk still full) says so.
    text, code = agent_status(config_path)
    assert "agent not running (stopped cleanly" in text.splitlines()[0]
    assert code == 1


async def until_value(probe: Callable[[], tuple[str, int] | None], what: str) -> tuple[str, int]:
    """Wait for ``probe()`` to return a value (not None) and return it."""
    found: list[tuple[str, int]] = []

    def check() -> bool:
        value = probe()
        if value is not None:
            found.append(value)
        return value is not None

    await until(check, what)
    return found[0]


def test_the_disk_fit_leaves_room_for_the_wal_the_reserve_and_the_status() -> None:
    small = disk_fit(used_bytes=0, free_bytes=DISK_BYTES, page_size=4096)
    assert small.wal_pages == 64  # the floor: SQLite's 1,000 would not fit
    assert small.page_cap * 4096 + wal_room_bytes(64, 4096) + DISK_RESERVE_BYTES + 2 * STATUS_FILE_BYTES <= DISK_BYTES
    large = disk_fit(used_bytes=10**9, free_bytes=30 * 10**9, page_size=4096)
    assert large.wal_pages == 1000  # SQLite's default, where the disk has room
    assert large.page_cap > 7_000_000
    # What the outbox holds counts as its own: a full disk does not shrink the cap below it.
    assert disk_fit(used_bytes=DISK_BYTES, free_bytes=0, page_size=4096) == small


def test_a_live_agent_that_cannot_write_its_status_is_running_and_a_dead_one_is_not() -> None:
    old = sample_status(written_at=utc_now() - timedelta(minutes=5))
    text, code = describe_status(old, now=utc_now(), holds_outbox=True)
    assert text.splitlines()[0] == f"gateway {STORE}/{GATEWAY}: agent running (pid 4242, status 5 min old)"
    assert "  - the agent has not updated its status for 5 min: it cannot write" in text
    assert code == 1
    for holds_outbox in (False, None):  # the pid lives on without the outbox, or it cannot be told
        text, _ = describe_status(old, now=utc_now(), holds_outbox=holds_outbox)
        assert "agent not running (status 5 min old)" in text
    text, _ = describe_status(old, now=utc_now(), pid_alive=False, holds_outbox=True)
    assert "agent not running" in text


def test_failing_writes_and_a_full_disk_in_words() -> None:
    now = datetime(2026, 3, 1, 9, 41, 15, tzinfo=UTC)
    since = datetime(2026, 3, 1, 9, 40, 28, tzinfo=UTC)
    failing = sample_status(
        written_at=now, disk_full_since=since, write_failing_since=since, last_write_at=now - timedelta(seconds=47)
    )
    text, _ = describe_status(failing, now=now)
    assert text.splitlines()[0].endswith(
        "agent running (pid 4242, status 0 s old); outbox writes failing: disk full since 09:40:28 UTC, "
        "last write 47 s ago"
    )
    going_on = sample_status(written_at=now, disk_full_since=since, evicted_total=1234)
    text, _ = describe_status(going_on, now=now)
    assert text.splitlines()[0].endswith(
        "; outbox writes going on a full disk: disk full since 09:40:28 UTC (1,234 events evicted, recorded as losses)"
    )


def test_holds_open_asks_the_kernel_which_process_has_the_outbox(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.sqlite3"
    outbox.write_bytes(b"")
    assert holds_open(os.getpid(), outbox) is False
    with outbox.open("rb"):
        assert holds_open(os.getpid(), outbox) is True
    assert holds_open(2**22 + 1, outbox) is False  # above Linux's pid_max: no such process


def test_a_status_is_padded_to_its_fixed_size_and_cut_to_fit() -> None:
    assert len(status_bytes(sample_status())) == STATUS_FILE_BYTES
    many = [f"device shelf-{n} down for 61 s: no such device /dev/ttyUSB{n}" for n in range(2000)]
    padded = status_bytes(sample_status(problems=many))
    assert len(padded) == STATUS_FILE_BYTES
    kept = AgentStatusFile.model_validate_json(padded).problems
    assert kept[0] == many[0]
    assert kept[-1] == f"(and {2000 - len(kept) + 1:,} more problems)"


def test_a_status_overwritten_in_place_keeps_its_blocks(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3.status.json"
    write_status(path, sample_status(outbox_depth=1))
    inode = path.stat().st_ino
    overwrite_status(path, sample_status(outbox_depth=2))
    assert (path.stat().st_ino, path.stat().st_size) == (inode, STATUS_FILE_BYTES)
    assert read_status(path).outbox_depth == 2
    path.write_bytes(b"{}")  # an older agent's unpadded file: overwriting it could need new blocks
    with pytest.raises(OSError, match="shorter than a status"):
        overwrite_status(path, sample_status())


def test_health_names_the_full_disk_and_metrics_show_it() -> None:
    since = datetime(2026, 3, 1, 9, 40, 28, tzinfo=UTC)
    common: dict[str, Any] = {
        "broker": "b:1",
        "connected": True,
        "disconnected_for_s": None,
        "depth": 50,
        "ack_stalled_for_s": None,
        "devices_down": [],
        "disk_full_since": since,
    }
    assert describe_problems(**common, write_failing=None, evicting=(1234, "the disk is full")) == [
        "outbox disk full since 09:40:28 UTC: 1,234 events evicted so far, telemetry first, "
        "each recorded as a loss the hub receives"
    ]
    assert describe_problems(**common, write_failing=(12.0, "database or disk is full"), queued=30) == [
        "outbox writes failing: disk full since 09:40:28 UTC for 12 s: database or disk is full; "
        "30 readings held in memory, devices wait"
    ]
    assert describe_problems(**common, write_failing=None) == [
        "outbox disk full since 09:40:28 UTC: the WAL is checkpointed to make room, nothing evicted so far"
    ]
    stats = AgentStats(
        depth=7,
        published=0,
        acked=0,
        resent=0,
        reconnects=0,
        rejected=0,
        last_ack_seq=0,
        connected=False,
        oldest_unacked_age_s=None,
        disk_full_since=since,
        writes_failing=True,
        wal_bytes=4152,
    )
    text = generate_latest(agent_registry(lambda: stats)).decode()
    for line in (
        "storegate_agent_outbox_disk_full 1.0",
        "storegate_agent_outbox_writes_failing 1.0",
        "storegate_agent_outbox_wal_bytes 4152.0",
    ):
        assert line in text


async def test_an_outbox_reopens_on_a_full_disk_and_evicts_to_take_new_events(small_disk: Path) -> None:
    path = small_disk / "outbox.sqlite3"
    first = [NewEvent.of(device_id="d", kind="environment.reading", ts=T0, payload={"n": n}) for n in range(2000)]
    async with Outbox(path=path) as outbox:
        await outbox.append(first)
    fill(small_disk)  # while the agent was stopped
    async with Outbox(path=path) as outbox:  # opening writes too: with the reserve's room
        assert outbox.depth() == 2000
        new = [NewEvent.of(device_id="d", kind="door.contact", ts=T0, payload={"n": n}) for n in range(50)]
        with pytest.raises(sqlite3.OperationalError) as full:
            await outbox.append(new)
        assert is_disk_full(full.value)
        assert outbox.disk_full_since is not None
        result = await outbox.append(new, make_room=len(new))
        assert result.stored == 50
        evicted = result.evicted[wire.Priority.TELEMETRY]
        assert evicted >= 100, "at least 5 % of the backlog at once"
        oldest = await outbox.first_seq()
        assert oldest == evicted + 1, "the oldest telemetry went"
        assert await outbox.ack_through(oldest + 9) == 10  # acks are written on the full disk too
        rows = await outbox.read_after(0, 10_000)
    hub = Hub()
    hub.take([(row.seq, row.fields()) for row in rows])
    assert len(hub.lost) == evicted
    assert len(hub.events) == 2000 - 10 - evicted + 50
