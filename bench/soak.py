#!/usr/bin/env python3
"""Soak run of the agent over real Mosquitto and the real hub (not run in CI).

Default: one hour at 500 events/s from numbered (replayable) devices, with a 30 s
broker outage every ten minutes. Every 10 s it samples the agent's RSS, open file
descriptors and outbox size on disk (database + WAL); once a minute it prints them.
At the end it waits for the hub to hold every event and checks each device's
numbering is complete, each reading exactly once.

Usage: .venv/bin/python bench/soak.py [--minutes 60] [--rate 500] [--outage-every 600] [--outage-s 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=500.0, help="events per second, all devices together")
    parser.add_argument("--outage-every", type=float, default=600.0, help="seconds between broker outages")
    parser.add_argument("--outage-s", type=float, default=30.0, help="length of each outage")
    args = parser.parse_args()

    import psutil

    from device_drivers.simulated.sequence import reading_number
    from launcher.broker import free_port, start_mosquitto
    from storegate.mqtt import MqttSettings
    from tests.procs import agent_service, hub_rows, hub_service

    devices = {
        "door-1": "security.door",
        "till-1": "sale.item",
        "shelf-1": "shelf.sample",
        "fridge-1": "environment.reading",
    }
    duration = args.minutes * 60
    per_device = int(args.rate / len(devices) * duration)
    work = Path(tempfile.mkdtemp(prefix="storegate-soak-"))
    broker = start_mosquitto(work / "broker")
    mqtt = MqttSettings(host=broker.host, port=broker.port, reconnect_min_s=0.5, reconnect_max_s=5.0)
    hub = hub_service(work / "hub", mqtt, http_port=free_port())
    agent = agent_service(
        work / "agent",
        mqtt,
        devices=[
            {
                "device_id": d,
                "driver": "simulated-sequence",
                "kind": k,
                "count": per_device,
                "rate_per_s": args.rate / len(devices),
                "seed": i,
            }
            for i, (d, k) in enumerate(devices.items())
        ],
        health={"interval_s": 10},
    )
    database = work / "hub" / "hub.sqlite3"
    outbox = work / "agent" / "outbox.sqlite3"
    samples: list[dict[str, float]] = []

    def stored() -> int:
        rows = hub_rows(database, "SELECT count(*) FROM events WHERE kind != 'outbox.loss'")
        return int(rows[0][0]) if rows else 0

    def outbox_bytes() -> int:
        return sum(p.stat().st_size for p in outbox.parent.glob(outbox.name + "*") if p.suffix != ".json")

    print(
        f"soak: {args.minutes:g} min at {args.rate:g} events/s ({per_device * len(devices):,} events), "
        f"broker outage of {args.outage_s:g} s every {args.outage_every:g} s; work dir {work}",
        flush=True,
    )
    hub.start()
    agent.start()
    assert agent.process is not None
    process = psutil.Process(agent.process.pid)
    started = time.monotonic()
    next_outage = args.outage_every
    outages = 0
    try:
        while time.monotonic() - started < duration:
            elapsed = time.monotonic() - started
            if elapsed >= next_outage:
                broker.stop()
                outage_started = time.monotonic()
                outages += 1
                while time.monotonic() - outage_started < args.outage_s:
                    time.sleep(1)
                broker.restart()
                next_outage += args.outage_every
            sample = {
                "t_s": round(elapsed),
                "rss_mb": process.memory_info().rss / 2**20,
                "fds": process.num_fds(),
                "outbox_mb": outbox_bytes() / 2**20,
                "hub_events": stored(),
            }
            samples.append(sample)
            if len(samples) % 6 == 1:
                print(json.dumps({k: round(v, 1) for k, v in sample.items()}), flush=True)
            time.sleep(10)  # sampling interval of a soak run
        total = per_device * len(devices)
        deadline = time.monotonic() + 600
        while stored() < total and time.monotonic() < deadline:
            time.sleep(2)
        rows = hub_rows(database, "SELECT device_id, kind, payload FROM events WHERE kind != 'outbox.loss'")
        numbers: dict[str, list[int]] = defaultdict(list)
        for device_id, kind, payload in rows:
            numbers[device_id].append(reading_number(kind, json.loads(payload)))
        complete = all(sorted(numbers[d]) == list(range(1, per_device + 1)) for d in devices)
        losses = hub_rows(database, "SELECT count(*) FROM data_losses")
    finally:
        agent.stop()
        hub.stop()
        broker.stop()
    summary = {
        "minutes": args.minutes,
        "rate": args.rate,
        "outages": outages,
        "events_expected": total,
        "events_at_hub": len(rows),
        "every_reading_exactly_once": complete,
        "data_loss_records": losses[0][0] if losses else None,
        "rss_mb_min": min(s["rss_mb"] for s in samples),
        "rss_mb_max": max(s["rss_mb"] for s in samples),
        "fds_min": min(s["fds"] for s in samples),
        "fds_max": max(s["fds"] for s in samples),
        "outbox_mb_max": max(s["outbox_mb"] for s in samples),
    }
    print(json.dumps(summary, indent=2), flush=True)


if __name__ == "__main__":
    main()
