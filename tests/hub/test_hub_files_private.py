"""A real hub's start leaves its database (and -wal, -shm) 0600 and its secrets_dir 0700, whatever it found."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from hub.settings import HubSettings
from tests.conftest import file_mode
from tests.hub.conftest import running_hub


@pytest.mark.usefixtures("umask_022")
async def test_the_hub_starts_with_its_files_private(hub_settings: HubSettings) -> None:
    database = Path(str(make_url(hub_settings.database_url).database))
    database.chmod(0o644)  # as an older hub, or a copy, left it
    secrets_dir = hub_settings.secrets_dir
    secrets_dir.mkdir(mode=0o755)
    secrets_dir.chmod(0o755)
    async with running_hub(hub_settings) as hub:
        assert await hub.runtime.link.wait_connected(5.0)
        assert file_mode(secrets_dir) == "0700"
        for name in (database.name, database.name + "-wal", database.name + "-shm"):
            file = database.with_name(name)
            assert file.exists(), f"{name} should exist while the hub runs"
            assert file_mode(file) == "0600", f"{name} is {file_mode(file)}"
