"""Secrets kept in files: the broker password, TLS private keys. Refused when others may read them.

Like ssh with a private key, a secret file that its group or others can read is not used:
the secret may already have leaked, and using it quietly would hide that. The error names
the file and the fix. The secret itself never appears in an error, a log line or a repr.
"""

from __future__ import annotations

import stat
from pathlib import Path

from pydantic import SecretStr


class SecretFileError(ValueError):
    """A secret file that is missing, unreadable, empty or readable by others; the message says the fix."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def require_private_file(path: Path, *, what: str) -> None:
    """Raise SecretFileError unless ``path`` is a regular file only its owner may read or write.

    ``what`` names the secret for people ("broker password file", "TLS private key").
    """
    try:
        status = path.stat()
    except FileNotFoundError:
        raise SecretFileError(path, f"{what} not found") from None
    except OSError as err:
        raise SecretFileError(path, f"cannot read the {what}: {err.strerror or err}") from None
    if not stat.S_ISREG(status.st_mode):
        raise SecretFileError(path, f"the {what} is not a regular file")
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o077:
        raise SecretFileError(
            path,
            f"the {what} is readable or writable by group or others (mode {mode:04o}); "
            f"it must be private to its owner: chmod 600 {path}",
        )


def read_secret_file(path: Path, *, what: str) -> SecretStr:
    """The secret in ``path`` (one trailing newline dropped), after :func:`require_private_file`."""
    require_private_file(path, what=what)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SecretFileError(path, f"cannot read the {what}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise SecretFileError(path, f"the {what} is not UTF-8 text") from None
    # Editors and `echo` add a newline; the secret is the line, not the line break.
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret:
        raise SecretFileError(path, f"the {what} is empty")
    return SecretStr(secret)
