"""``run_agent`` as a process: exit codes, signals, and the last will when it dies without a word."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.runner import run_agent
from storegate.mqtt import MqttSettings
from tests.conftest import wait_until
from tests.edge_agent.conftest import GATEWAY, STORE, FakeHub

REPO = Path(__file__).resolve().parents[2]
AGENT_MAIN = "import sys; from pathlib import Path; from edge_agent.runner import run_agent; " + (
    "sys.exit(run_agent(Path(sys.argv[1])))"
)


def write_config(tmp_path: Path, mqtt: MqttSettings) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
store_id = "{STORE}"
gateway_id = "{GATEWAY}"

[mqtt]
host = "{mqtt.host}"
port = {mqtt.port}

[outbox]
path = "outbox.sqlite3"

[health]
interval_s = 1

[[devices]]
device_id = "chiller-1"
driver = "simulated-temperature"
interval_s = 0.1
"""
    )
    return path


@pytest.fixture
def agent_process(tmp_path: Path, mqtt_settings: MqttSettings) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts the agent of a config file on the test's broker as a child process; kills it at the end."""
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        config = write_config(tmp_path, mqtt_settings)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        log = (tmp_path / "agent.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-c", AGENT_MAIN, str(config)], cwd=tmp_path, env=env, stdout=log, stderr=log
        )
        log.close()
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def births(hub: FakeHub) -> int:
    return sum(1 for status in hub.statuses if status.reason == "birth")


def test_a_killed_agent_leaves_its_last_will(
    mqtt_settings: MqttSettings, agent_process: Callable[[], subprocess.Popen[bytes]]
) -> None:
    with FakeHub(mqtt_settings, auto_ack=True) as hub:
        process = agent_process()
        wait_until(lambda: births(hub) == 1, timeout=20, what="the agent's birth status")
        wait_until(lambda: hub.received(), what="events from the simulated device")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        wait_until(lambda: (s := hub.last_status()) is not None and not s.online, what="the last will")
        will = hub.last_status()
        assert will is not None
        assert (will.online, will.reason, will.store_id, will.gateway_id) == (False, "lost", STORE, GATEWAY)


def test_sigterm_stops_cleanly_with_a_shutdown_status_and_restart_continues_the_stream(
    tmp_path: Path, mqtt_settings: MqttSettings, agent_process: Callable[[], subprocess.Popen[bytes]]
) -> None:
    with FakeHub(mqtt_settings, auto_ack=False) as hub:
        process = agent_process()
        wait_until(lambda: births(hub) == 1, timeout=20, what="the agent's birth status")
        wait_until(lambda: len(hub.unique()) >= 3, what="a few events")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, (tmp_path / "agent.log").read_text()
        status = hub.last_status()
        assert status is not None
        assert (status.online, status.reason) == (False, "shutdown")
        seen = hub.unique()
        offset = len(hub.received())

        agent_process()
        wait_until(lambda: births(hub) == 2, timeout=20, what="the second birth")
        # Nothing was acknowledged: the second run sends the first run's events again, unchanged.
        wait_until(lambda: set(seen) <= {e.seq for e in hub.received()[offset:]}, what="the first run's events again")
        again = {event.seq: event for event in hub.received()[offset:]}
        assert all(again[seq] == event for seq, event in seen.items())
        assert {event.stream for event in hub.received()} == {seen[1].stream}


def test_a_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('store_id = "s1"\ngateway_id = "g1"\n[outbox]\npath = "o.sqlite3"\nmax_batch = -1\n')
    assert run_agent(path) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert "outbox.max_batch: Input should be greater than 0 (got -1)" in err


def test_a_missing_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_agent(tmp_path / "absent.toml") == 2
    assert "file not found" in capsys.readouterr().err
