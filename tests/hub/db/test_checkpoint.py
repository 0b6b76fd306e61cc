"""The hub's SQLite WAL is checkpointed in the background, never inside an ingest commit."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from hub.db.checkpoint import WalCheckpointer
from hub.db.engine import create_engine, sqlite_path
from tests.hub.conftest import until


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


async def test_engine_connections_leave_checkpoints_to_the_checkpointer(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}"
    for background, expected in ((True, 0), (False, 10_000)):
        engine = create_engine(url, background_checkpoint=background)
        try:
            async with engine.connect() as conn:
                assert (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one() == expected
        finally:
            await engine.dispose()


def test_sqlite_path_only_for_sqlite_urls(tmp_path: Path) -> None:
    assert sqlite_path(f"sqlite+aiosqlite:///{tmp_path}/hub.sqlite3") == tmp_path / "hub.sqlite3"
    assert sqlite_path("postgresql+asyncpg://postgres@127.0.0.1:5432/test") is None


async def test_checkpointer_moves_committed_pages_into_the_database_and_truncates_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    checkpointer = WalCheckpointer(path=path, interval_s=0.02)
    checkpointer.start()
    try:
        for batch in range(20):
            writer.execute("BEGIN")
            writer.executemany("INSERT INTO t (body) VALUES (?)", [("x" * 200,)] * 500)
            writer.execute("COMMIT")
            if batch == 0:
                # No autocheckpoint ran, so only the background checkpointer can have copied pages over.
                await until(lambda: checkpointer.checkpoints >= 2, what="two background checkpoints")
        grown = _wal(path).stat().st_size
        assert grown > 0
    finally:
        await checkpointer.stop()
    assert checkpointer.failures == 0
    # TRUNCATE on stop leaves an empty WAL at rest (or none, if SQLite removed it on close).
    assert not _wal(path).exists() or _wal(path).stat().st_size == 0
    writer.close()
    # Everything committed is in the database file itself: readable with the WAL gone.
    _wal(path).unlink(missing_ok=True)
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (10_000,)
    reader.close()
