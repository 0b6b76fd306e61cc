"""Wheels made in memory for the hub's and the gateway's checks (the real wheels are built by the end-to-end test)."""

from __future__ import annotations

import io
import zipfile


def fake_wheel(
    version: str = "0.2.0",
    *,
    name: str = "storegate",
    members: dict[str, bytes] | None = None,
    metadata: str | None = None,
) -> bytes:
    """A zip shaped like a wheel of ``name`` ``version``, with ``members`` besides its METADATA."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member, data in (members or {"storegate/__init__.py": b"__version__ = 'x'\n"}).items():
            archive.writestr(member, data)
        text = metadata if metadata is not None else f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n"
        archive.writestr(f"{name}-{version}.dist-info/METADATA", text)
    return buffer.getvalue()
