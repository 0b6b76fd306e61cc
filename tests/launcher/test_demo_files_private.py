"""The demo's directory and configs are private to their owner, under a umask that would open them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.broker import LocalBroker
from launcher.demo import _data_dir, demo_configs


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> str:
    return f"{path.stat().st_mode & 0o777:04o}"


def test_the_demo_directory_and_configs_are_private(tmp_path: Path, mosquitto: LocalBroker) -> None:
    with _data_dir(None) as temporary:
        assert mode(temporary) == "0700"
        hub_config, agent_config = demo_configs(temporary, mosquitto, 8000)
        assert (mode(hub_config), mode(agent_config)) == ("0600", "0600")
    assert not temporary.exists()

    requested = tmp_path / "new" / "demo-data"
    with _data_dir(requested) as made:
        assert mode(made) == "0700"
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o755)
    with _data_dir(existing) as kept:
        assert mode(kept) == "0755", "a directory the user made keeps the mode the user gave it"
