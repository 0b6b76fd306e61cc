"""The hub's SQLite database, its -wal and -shm, and its restored copies are 0600 whatever the umask.

The database holds every event and the webhook secrets. The files are made by the real code
paths (migrations, the engine, restore) under a permissive umask, so 0600 is the code's doing.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from hub.admin.backup import backup_database, restore_database
from hub.db.engine import create_engine
from hub.db.migrate import upgrade_to_head
from storegate.private_files import is_private
from tests.conftest import file_mode


async def write_through_the_engine(url: str) -> None:
    """A write that leaves the -wal and -shm beside the database while the engine is open."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE IF NOT EXISTS probe (n INTEGER)"))
            await connection.execute(text("INSERT INTO probe VALUES (1)"))
        database = Path(str(engine.url.database))
        for file in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
            assert file.exists(), f"{file.name} should exist while the engine is open"
            assert file_mode(file) == "0600", f"{file.name} is {file_mode(file)}"
    finally:
        await engine.dispose()


async def test_a_new_hub_database_and_its_wal_and_shm_are_0600(tmp_path: Path, permissive_umask: int) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}"
    await upgrade_to_head(url)  # what the hub runs first: it creates the file
    assert file_mode(tmp_path / "hub.sqlite3") == "0600"
    await write_through_the_engine(url)


async def test_an_existing_readable_database_is_tightened(tmp_path: Path, permissive_umask: int) -> None:
    database = tmp_path / "hub.sqlite3"
    url = f"sqlite+aiosqlite:///{database}"
    await upgrade_to_head(url)
    for suffix in ("", "-wal"):
        file = database.with_name(database.name + suffix)
        file.touch()
        file.chmod(0o644)  # as an older hub left it
    engine = create_engine(url)  # tightens before it opens anything
    try:
        assert file_mode(database) == "0600"
        assert file_mode(database.with_name(database.name + "-wal")) == "0600"
    finally:
        await engine.dispose()
    await write_through_the_engine(url)


async def test_a_backup_and_a_restored_database_are_0600(tmp_path: Path, permissive_umask: int) -> None:
    source = f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}"
    await upgrade_to_head(source)
    backup = await backup_database(source, tmp_path / "backup.sqlite3")
    assert is_private(backup.path)

    restored = tmp_path / "restored.sqlite3"
    await restore_database(f"sqlite+aiosqlite:///{restored}", backup.path)
    assert file_mode(restored) == "0600"
    assert not list(tmp_path.glob(".*.partial"))
