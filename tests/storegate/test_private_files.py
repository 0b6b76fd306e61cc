"""Private files are 0600 from the moment they exist, and are replaced whole."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from storegate.private_files import (
    create_private_once,
    is_private,
    make_private,
    private_dir,
    touch_private,
    write_private,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_private_creates_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        target = tmp_path / "nested" / "key.pem"
        write_private(target, "secret")
    finally:
        os.umask(old)
    assert _mode(target) == 0o600
    assert target.read_text() == "secret"


def test_write_private_replaces_a_readable_file_with_a_private_one(tmp_path: Path) -> None:
    target = tmp_path / "agent.toml"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, b"new")
    assert _mode(target) == 0o600
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["agent.toml"], "no temporary file is left behind"


def test_private_dir_tightens_an_existing_directory(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    directory.mkdir(mode=0o755)
    private_dir(directory)
    assert _mode(directory) == 0o700
    assert is_private(directory)


def test_touch_private_keeps_existing_content_and_make_private_tightens(tmp_path: Path) -> None:
    target = tmp_path / "outbox.sqlite3"
    touch_private(target)
    assert _mode(target) == 0o600
    target.write_text("rows")
    target.chmod(0o644)
    assert not is_private(target)
    touch_private(target)
    assert target.read_text() == "rows"
    make_private(target)
    assert is_private(target)


def test_create_private_once_makes_a_0600_file_and_never_replaces_one(tmp_path: Path) -> None:
    key = tmp_path / "secrets" / "backup.key"
    create_private_once(key, "first\n")
    assert (key.read_text(), _mode(key), _mode(key.parent)) == ("first\n", 0o600, 0o700)
    create_private_once(key, "second\n")  # a key in use is never overwritten
    assert key.read_text() == "first\n"
    assert [p.name for p in key.parent.iterdir()] == ["backup.key"], "no staged copy is left behind"
