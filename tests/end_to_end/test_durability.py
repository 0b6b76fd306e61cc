"""kill -9 durability of the outbox: what was committed before a SIGKILL is intact after it.

The agent runs as a real process with numbered (replayable) devices and no broker, so
everything stays in the outbox. The test SIGKILLs it at random points while it commits
thousands of events a second, and after every kill opens the outbox itself: SQLite's
integrity check passes, every device's committed readings are exactly 1..mark with no
hole and no double, the marks never go back, and the gateway's seqs are contiguous.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

from device_drivers.simulated.sequence import reading_number
from launcher.broker import free_port
from storegate.mqtt import MqttSettings
from tests.conftest import wait_until
from tests.procs import agent_service

DEVICES = {"door-1": "security.door", "till-1": "sale.item", "fridge-1": "environment.reading"}
KILLS = 5


def committed(outbox: Path) -> tuple[str, dict[str, list[int]], list[int], dict[str, int]]:
    """Integrity check result, readings per device, seqs, and device marks of a closed outbox."""
    connection = sqlite3.connect(outbox)
    try:
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
        numbers: dict[str, list[int]] = defaultdict(list)
        seqs = []
        for seq, body in connection.execute("SELECT seq, body FROM events ORDER BY seq"):
            event = json.loads(body)
            seqs.append(seq)
            numbers[event["device_id"]].append(reading_number(event["kind"], event["payload"]))
        marks = dict(connection.execute("SELECT device_id, source_seq FROM device_marks").fetchall())
    finally:
        connection.close()
    return integrity, dict(numbers), seqs, marks


def test_sigkill_never_loses_or_corrupts_committed_events(tmp_path: Path) -> None:
    seed = int(os.environ.get("STOREGATE_CHAOS_SEED", random.randrange(2**32)))
    print(f"seed: {seed}")
    rng = random.Random(seed)
    nobody = MqttSettings(port=free_port(), reconnect_min_s=0.2, reconnect_max_s=1.0)  # no broker: all stays
    devices = [
        {"device_id": d, "driver": "simulated-sequence", "kind": k, "count": 1_000_000, "rate_per_s": 2000.0}
        for d, k in DEVICES.items()
    ]
    agent = agent_service(tmp_path, nobody, devices=devices)
    outbox = tmp_path / "outbox.sqlite3"
    status = tmp_path / "outbox.sqlite3.status.json"
    previous_marks: dict[str, int] = {}
    for kill in range(KILLS):
        status.unlink(missing_ok=True)
        agent.start()
        # Kill at a random moment once the agent is up and committing (its status file says it started).
        wait_until(status.exists, timeout=20, what="the agent to start")
        time.sleep(rng.uniform(0.2, 1.2))  # a random point in the stream, not synchronisation
        agent.kill()
        integrity, numbers, seqs, marks = committed(outbox)
        assert integrity == "ok", f"kill {kill}: {integrity}"
        assert seqs == list(range(1, len(seqs) + 1)), f"kill {kill}: the gateway's seqs have a hole"
        for device_id in DEVICES:
            seen = numbers.get(device_id, [])
            assert seen == list(range(1, len(seen) + 1)), f"kill {kill}: {device_id} readings not 1..n once each"
            assert marks.get(device_id, 0) == len(seen), f"kill {kill}: {device_id} mark disagrees with its rows"
            assert marks.get(device_id, 0) >= previous_marks.get(device_id, 0), f"kill {kill}: committed data lost"
        previous_marks = marks
    assert sum(previous_marks.values()) > 1_000, "the agent should have committed thousands of events"
    assert all(previous_marks.get(d, 0) > 0 for d in DEVICES)
