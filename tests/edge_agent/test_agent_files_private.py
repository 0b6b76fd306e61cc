"""The agent's outbox (and its -wal) and status file are 0600 whatever the umask: they hold the store's events.

Made by the real agent, run against a real Mosquitto, under a umask that would leave them
readable by everyone, so 0600 is the agent's doing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.outbox import Outbox
from storegate.mqtt import MqttSettings
from tests.conftest import eventually, file_mode
from tests.edge_agent.conftest import make_config, running, temperature


@pytest.mark.usefixtures("permissive_umask")
async def test_outbox_wal_and_status_file_are_0600(tmp_path: Path, mqtt_settings: MqttSettings) -> None:
    config = make_config(tmp_path, mqtt_settings, health={"interval_s": 0.2})
    agent = EdgeAgent(config=config)
    outbox = config.outbox.path
    async with running(agent):
        for n in range(3):
            await agent.record(temperature(n))
        await agent.flush()

        async def status_written() -> bool:
            return agent.status_path.exists()

        await eventually(status_written, what="the status file")
        wal = outbox.with_name(outbox.name + "-wal")
        assert wal.exists(), "the outbox runs in WAL mode: its -wal holds the latest events"
        for file in (outbox, wal, agent.status_path):
            assert file_mode(file) == "0600", f"{file.name} is {file_mode(file)}"
        # Exclusive locking keeps the WAL index in memory; were there a -shm, it would be private too.
        shm = outbox.with_name(outbox.name + "-shm")
        assert not shm.exists() or file_mode(shm) == "0600"
    assert file_mode(agent.status_path) == "0600"  # the last status, written on the way out
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.usefixtures("permissive_umask")
async def test_an_older_agents_readable_outbox_is_tightened_on_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    async with Outbox(path=path):
        pass
    path.chmod(0o644)
    wal = path.with_name(path.name + "-wal")
    wal.touch()
    wal.chmod(0o644)
    async with Outbox(path=path) as outbox:
        assert (file_mode(path), file_mode(wal)) == ("0600", "0600")
        assert outbox.depth() == 0
