"""Files and directories that only their owner may read: keys, passwords, tokens, outboxes, databases.

Everything Storegate creates that holds a secret or an event goes through here, so the mode is set when
the file is created (never a window in which it is 0644) and a file replaced is replaced atomically.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Final

PRIVATE_FILE_MODE: Final = 0o600
PRIVATE_DIR_MODE: Final = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) if needed and make it 0700; returns it."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def write_private(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` as a 0600 file, atomically: readers see the old content or the new, whole."""
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mkstemp: 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def create_private_once(path: Path, data: bytes | str) -> None:
    """Create ``path`` as a 0600 file holding ``data`` unless it exists, in a 0700 directory; never replace it.

    For keys made on first use: when two processes make one at once, the first to land wins and both then read
    the same key (the loser's staged copy is dropped), so no key in use is ever overwritten.
    """
    if path.exists():
        return
    private_dir(path.parent)
    staged = path.with_name(f".{path.name}.{os.getpid()}.new")
    write_private(staged, data)
    try:
        os.link(staged, path)  # fails if the file appeared meanwhile
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()


def make_private(path: Path) -> None:
    """Make an existing file 0600 (a database or an outbox another library created)."""
    os.chmod(path, PRIVATE_FILE_MODE)


def touch_private(path: Path) -> None:
    """Create ``path`` empty as 0600 if it does not exist, so a library that opens it later keeps that mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))


def is_private(path: Path) -> bool:
    """True when neither the group nor others may read, write or enter ``path``."""
    return path.stat().st_mode & 0o077 == 0


# The files SQLite keeps beside a database; it creates them with the database file's mode.
SQLITE_COMPANIONS: Final = ("-wal", "-shm", "-journal")


def private_sqlite_files(path: Path) -> list[tuple[Path, int]]:
    """Create the SQLite database ``path`` empty and 0600 if missing, and make it and its companions 0600.

    Call before SQLite opens it: SQLite creates a database by the umask, and its -wal, -shm and
    -journal with the database's mode. Returns each file tightened with its old mode (an older
    version's, or a copy's), for a warning; PermissionError for a file of another user.
    """
    touch_private(path)
    tightened: list[tuple[Path, int]] = []
    for file in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS)):
        try:
            if is_private(file):
                continue
            was = file.stat().st_mode & 0o777
            make_private(file)
        except FileNotFoundError:
            continue
        tightened.append((file, was))
    return tightened
