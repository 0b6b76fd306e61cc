"""A backup changed after it was written is refused before anything is touched, on SQLite and PostgreSQL.

The finding: a SQLite backup with one SKU renamed by editing its bytes (same length, so SQLite's own
integrity check passes) restored with exit 0. Every backup now has a manifest (SHA-256, and an HMAC with
the backup key); a restore checks the copy it is about to restore against it, first."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from hub.admin.backup import BackupError, backup_database, restore_database
from hub.admin.manifest import MANIFEST_SUFFIX, ManifestError, digest_file, load_key
from tests.hub.admin.test_backup import (
    ROWS,
    assert_untouched,
    backup_file,
    fresh_url,
    full_database,
    is_sqlite,
    snapshot_of,
    storegate,
)

__all__ = ["fresh_url", "full_database"]  # fixtures, used by name

SKU_NAME = ROWS["skus"][0]["name"].encode()  # "Vollmilch 1 l — Bio"
RENAMED = b"Hafermilch" + SKU_NAME[len(b"Hafermilch") :]  # same length: no page grows or moves
KEY = bytes(range(32))


def tamper(path: Path, database_url: str) -> None:
    """Change the backup the way an attacker with write access to the backup store would."""
    whole = path.read_bytes()
    if is_sqlite(database_url):
        assert whole.count(SKU_NAME) == 1
        path.write_bytes(whole.replace(SKU_NAME, RENAMED))
        with closing(sqlite3.connect(path)) as edited:  # the edit is invisible to SQLite itself
            assert edited.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert edited.execute("SELECT name FROM skus").fetchone() == (RENAMED.decode(),)
        return
    middle = len(whole) // 2  # pg_dump compresses: any byte of the data
    path.write_bytes(whole[:middle] + bytes([whole[middle] ^ 0x01]) + whole[middle + 1 :])


async def test_a_byte_edited_backup_is_refused_and_the_database_left_as_it_was(
    full_database: str, tmp_path: Path
) -> None:
    path = backup_file(tmp_path, full_database)
    await backup_database(full_database, path, key=KEY)
    tamper(path, full_database)
    before = await snapshot_of(full_database)

    # --force (replace a database with rows) and --unverified (no manifest) do not let it through.
    with pytest.raises(BackupError, match=r"does not match its manifest .*changed or damaged after the backup"):
        await restore_database(full_database, path, force=True, key=KEY, unverified=True)

    assert await snapshot_of(full_database) == before
    assert not list(tmp_path.glob(".*.partial")), "the checked copy was left behind"


async def test_a_good_backup_restores_verified_with_its_signature(
    full_database: str, fresh_url: str, tmp_path: Path
) -> None:
    path = backup_file(tmp_path, full_database)
    report = await backup_database(full_database, path, key=KEY)
    manifest = json.loads(report.manifest.read_text())
    assert report.manifest == path.with_name(path.name + MANIFEST_SUFFIX)
    assert report.manifest.stat().st_mode & 0o077 == 0
    assert manifest["sha256"] == report.sha256
    assert manifest["size"] == path.stat().st_size
    assert manifest["hmac_sha256"]

    restored = await restore_database(fresh_url, path, key=KEY)

    assert restored.verification == "signed"
    assert await snapshot_of(fresh_url) == await snapshot_of(full_database)


async def test_a_backup_and_manifest_rewritten_together_are_caught_by_the_hmac(
    full_database: str, fresh_url: str, tmp_path: Path
) -> None:
    path = backup_file(tmp_path, full_database)
    report = await backup_database(full_database, path, key=KEY)
    tamper(path, full_database)
    # The attacker recomputes the SHA-256 and size; without the key the HMAC stays that of the old manifest.
    sha256, size = digest_file(path)
    manifest = json.loads(report.manifest.read_text())
    report.manifest.write_text(json.dumps(manifest | {"sha256": sha256, "size": size}))

    with pytest.raises(BackupError, match="not signed with this backup key"):
        await restore_database(fresh_url, path, key=KEY, unverified=True)
    # Dropping the signature instead does not help while a key is configured.
    report.manifest.write_text(json.dumps(manifest | {"sha256": sha256, "size": size, "hmac_sha256": None}))
    with pytest.raises(BackupError, match="not signed, though a backup key is configured"):
        await restore_database(fresh_url, path, key=KEY)
    await assert_untouched(fresh_url)


async def test_a_backup_without_its_manifest_restores_only_when_asked(
    full_database: str, fresh_url: str, tmp_path: Path
) -> None:
    path = backup_file(tmp_path, full_database)
    report = await backup_database(full_database, path, key=KEY)
    report.manifest.unlink()

    with pytest.raises(BackupError, match=r"has no manifest .*pass --unverified to restore it anyway"):
        await restore_database(fresh_url, path, key=KEY)
    await assert_untouched(fresh_url)

    restored = await restore_database(fresh_url, path, key=KEY, unverified=True)
    assert restored.verification == "unverified"
    assert await snapshot_of(fresh_url) == await snapshot_of(full_database)


async def test_a_signed_backup_without_the_key_needs_unverified_and_still_checks_the_sha256(
    full_database: str, fresh_url: str, tmp_path: Path
) -> None:
    path = backup_file(tmp_path, full_database)
    await backup_database(full_database, path, key=KEY)

    with pytest.raises(BackupError, match=r"signed, and there is no backup key .*--key-file"):
        await restore_database(fresh_url, path)

    restored = await restore_database(fresh_url, path, unverified=True)
    assert restored.verification == "checksum"


def test_the_backup_key_is_made_private_once_and_refused_when_others_may_read_it(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "backup.key"
    assert load_key(path, create=False) is None
    key = load_key(path, create=True)
    assert key is not None
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_key(path, create=True) == key  # kept, never replaced
    path.chmod(0o644)
    with pytest.raises(ManifestError, match="may be read by others"):
        load_key(path, create=False)


async def test_cli_refuses_an_edited_backup_with_exit_1_and_says_how_to_force_a_missing_manifest(
    full_database: str, tmp_path: Path
) -> None:
    path = backup_file(tmp_path, full_database)
    config = tmp_path / "hub.toml"
    config.write_text(f'database_url = "{full_database}"\nsecrets_dir = "{tmp_path / "secrets"}"\n')
    backed_up = await asyncio.to_thread(storegate, "hub", "backup", "--config", str(config), str(path))
    assert backed_up.returncode == 0, backed_up.stderr
    tamper(path, full_database)
    before = await snapshot_of(full_database)

    edited = await asyncio.to_thread(storegate, "hub", "restore", "-c", str(config), "--force", str(path))

    assert edited.returncode == 1
    assert edited.stderr.startswith("restore failed: ")
    assert "does not match its manifest" in edited.stderr
    assert edited.stderr.count("\n") == 1
    assert await snapshot_of(full_database) == before

    path.with_name(path.name + MANIFEST_SUFFIX).unlink()
    missing = await asyncio.to_thread(storegate, "hub", "restore", "-c", str(config), "--force", str(path))
    assert missing.returncode == 1
    assert "--unverified" in missing.stderr
    assert await snapshot_of(full_database) == before
