"""The demo's directory and configs are private to their owner, under a umask that would open them."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.broker import LocalBroker
from launcher.demo import _data_dir, demo_configs
from tests.conftest import file_mode

pytestmark = pytest.mark.usefixtures("umask_022")


def test_the_demo_directory_and_configs_are_private(tmp_path: Path, mosquitto: LocalBroker) -> None:
    with _data_dir(None) as temporary:
        assert file_mode(temporary) == "0700"
        hub_config, agent_config = demo_configs(temporary, mosquitto, 8000)
        assert (file_mode(hub_config), file_mode(agent_config)) == ("0600", "0600")
    assert not temporary.exists()

    requested = tmp_path / "new" / "demo-data"
    with _data_dir(requested) as made:
        assert file_mode(made) == "0700"
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o755)
    with _data_dir(existing) as kept:
        assert file_mode(kept) == "0755", "a directory the user made keeps the mode the user gave it"
