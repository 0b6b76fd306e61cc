"""The release wheels on the hub's disk: checked on upload, written once under a name the hub makes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from storegate.wheels import WheelInfo


def wheel_filename(version: str) -> str:
    """The file a release is kept in (from its checked version, never from the uploader's file name)."""
    return f"storegate-{version}-py3-none-any.whl"


def write_wheel(directory: Path, info: WheelInfo, data: bytes) -> Path:
    """Write ``data`` as the release ``info`` into ``directory`` (made if absent), whole or not at all."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / wheel_filename(info.version)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".upload-", suffix=".whl")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
