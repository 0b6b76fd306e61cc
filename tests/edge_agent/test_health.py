"""Problems in words, the Prometheus view of the agent's counters, and the backoff."""

from __future__ import annotations

import random

from prometheus_client import generate_latest

from edge_agent.health import AgentStats, RateMeter, agent_registry, describe_problems
from edge_agent.timing import Backoff


def test_nothing_wrong_says_nothing() -> None:
    assert (
        describe_problems(
            broker="127.0.0.1:1883",
            connected=True,
            disconnected_for_s=None,
            depth=3,
            ack_stalled_for_s=None,
            write_failing=None,
            devices_down=[],
        )
        == []
    )


def test_problems_in_words() -> None:
    problems = describe_problems(
        broker="127.0.0.1:1883",
        connected=False,
        disconnected_for_s=42.4,
        depth=1200,
        ack_stalled_for_s=None,
        write_failing=(3.0, "database or disk is full"),
        devices_down=[("fridge-1", 61.0, "no such device /dev/ttyUSB0"), ("scale-2", 5.0, None)],
        devices_attention=[("receipt-printer", "paper out"), ("entrance-cam", "view covered (tampered)")],
    )
    assert problems == [
        "broker 127.0.0.1:1883 unreachable for 42 s; 1,200 events waiting",
        "outbox writes failing for 3 s: database or disk is full",
        "device fridge-1 down for 61 s: no such device /dev/ttyUSB0",
        "device scale-2 down for 5 s",
        "device receipt-printer needs attention: paper out",
        "device entrance-cam needs attention: view covered (tampered)",
    ]


def test_a_full_outbox_and_readings_held_in_memory_are_problems() -> None:
    problems = describe_problems(
        broker="b:1",
        connected=True,
        disconnected_for_s=None,
        depth=50,
        ack_stalled_for_s=None,
        write_failing=(12.0, "database or disk is full"),
        devices_down=[],
        queued=10_000,
        evicting=(1234, "50 events or 1 MB"),
    )
    assert problems == [
        "outbox full (50 events or 1 MB): 1,234 events evicted so far, telemetry first; the hub is told which",
        "outbox writes failing for 12 s: database or disk is full; 10,000 readings held in memory, devices wait",
    ]


def test_a_silent_hub_is_a_problem_only_while_connected() -> None:
    def problems(*, connected: bool) -> list[str]:
        return describe_problems(
            broker="b:1",
            connected=connected,
            disconnected_for_s=None if connected else 9.0,
            depth=1,
            ack_stalled_for_s=30.0,
            write_failing=None,
            devices_down=[],
        )

    assert problems(connected=True) == ["hub has not acknowledged for 30 s; 1 event waiting"]
    assert problems(connected=False) == ["broker b:1 unreachable for 9 s; 1 event waiting"]


def test_metrics_have_the_agent_names() -> None:
    stats = AgentStats(
        depth=7,
        published=10,
        acked=3,
        resent=2,
        reconnects=1,
        rejected=4,
        last_ack_seq=3,
        connected=True,
        oldest_unacked_age_s=12.5,
        devices_up=(("fridge-1", True), ("scale-2", False)),
        size_bytes=4096,
        duplicates=5,
        evicted_by_priority=(("security", 0), ("sales", 0), ("device", 1), ("telemetry", 9)),
        publish_rate=120.5,
        ack_rate=118.0,
    )
    assert stats.evicted == 10
    text = generate_latest(agent_registry(lambda: stats)).decode()
    for line in (
        "storegate_agent_outbox_depth 7.0",
        "storegate_agent_oldest_unacked_age_seconds 12.5",
        "storegate_agent_published_total 10.0",
        "storegate_agent_acked_total 3.0",
        "storegate_agent_resent_total 2.0",
        "storegate_agent_reconnects_total 1.0",
        "storegate_agent_rejected_readings_total 4.0",
        "storegate_agent_connected 1.0",
        'storegate_agent_device_up{device_id="fridge-1"} 1.0',
        'storegate_agent_device_up{device_id="scale-2"} 0.0',
        "storegate_agent_outbox_bytes 4096.0",
        "storegate_agent_duplicates_dropped_total 5.0",
        'storegate_agent_evicted_total{priority="telemetry"} 9.0',
        'storegate_agent_evicted_total{priority="security"} 0.0',
        "storegate_agent_publish_rate 120.5",
        "storegate_agent_ack_rate 118.0",
    ):
        assert line in text.splitlines(), line


def test_backoff_grows_is_capped_and_jittered() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0)
    rng = random.Random(1)
    for attempt, cap in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0)):
        delays = {backoff.delay(attempt, rng) for _ in range(50)}
        assert all(cap / 2 <= delay <= cap for delay in delays)
        assert len(delays) > 1


def test_rates_are_per_second_over_the_last_minute() -> None:
    meter = RateMeter(window_s=60.0)
    assert meter.sample(0.0, 0) == 0.0
    for second in range(1, 121):
        # 100 events a second for the first minute, then 10.
        meter.sample(float(second), 100 * min(second, 60) + 10 * max(second - 60, 0))
    assert meter.rate == 10.0
    assert len(meter._samples) <= 62
    meter.sample(120.5, 100 * 60 + 10 * 60 + 5)  # samples closer than a second apart are not kept
    assert len(meter._samples) <= 62
    assert round(meter.rate, 3) == round((6000 + 605 - 6000) / 60.5, 3)
