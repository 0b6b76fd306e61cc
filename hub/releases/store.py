"""The release wheels on the hub's disk: checked on upload, written once under a name the hub makes."""

from __future__ import annotations

from pathlib import Path

from storegate.private_files import write_private
from storegate.wheels import WheelInfo


def wheel_filename(version: str) -> str:
    """The file a release is kept in (from its checked version, never from the uploader's file name)."""
    return f"storegate-{version}-py3-none-any.whl"


def write_wheel(directory: Path, info: WheelInfo, data: bytes) -> Path:
    """Write ``data`` as the release ``info`` into ``directory`` (made if absent), whole or not at all."""
    target = directory / wheel_filename(info.version)
    write_private(target, data)  # atomic (a temporary file renamed over), 0600: only the hub serves it
    return target
