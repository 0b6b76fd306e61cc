"""What a Storegate release is: a wheel of the ``storegate`` distribution, checked before anyone trusts it (pure).

The hub checks an upload with :func:`inspect_wheel` before it offers it to gateways; a gateway checks what it
downloaded again (the SHA-256 the hub sent, then the same inspection) before it installs anything. A wheel is a
zip: its ``*.dist-info/METADATA`` names the distribution and its version, and every member must stay inside the
directory it is unpacked into (no absolute paths, no ``..``), so a forged wheel cannot write elsewhere.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from typing import Final

DISTRIBUTION: Final = "storegate"
# A release's version as a directory name and a URL segment: PEP 440 with a local part (0.1.0+test1), no slashes.
VERSION_PATTERN: Final = r"^[0-9][0-9A-Za-z.+!_-]{0,63}$"
_VERSION: Final = re.compile(VERSION_PATTERN)
# METADATA is small; a huge one is a forged wheel.
_MAX_METADATA_BYTES: Final = 1024 * 1024
# Members of a wheel of this project; anything larger is not ours (and could be a zip bomb).
_MAX_MEMBER_BYTES: Final = 64 * 1024 * 1024
_MAX_MEMBERS: Final = 20_000


class WheelError(ValueError):
    """The file is not a usable Storegate release; the message says why, in words."""


@dataclass(frozen=True, slots=True)
class WheelInfo:
    """A checked release: its version, size and SHA-256 (hex)."""

    version: str
    size: int
    sha256: str


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex, as releases are named by."""
    return hashlib.sha256(data).hexdigest()


def is_release_version(version: str) -> bool:
    """Whether ``version`` may name a release (a directory on the gateway, a path segment on the hub)."""
    return bool(_VERSION.match(version)) and ".." not in version


def safe_member(name: str) -> bool:
    """Whether a zip member's name stays inside the directory it is unpacked into."""
    if not name or name.startswith(("/", "\\")) or "\\" in name or ":" in name.split("/", 1)[0]:
        return False
    return all(part not in {"..", ""} for part in name.rstrip("/").split("/"))


def inspect_wheel(data: bytes, *, max_bytes: int) -> WheelInfo:
    """Check ``data`` is a wheel of the ``storegate`` distribution within ``max_bytes``; its version, size, hash.

    Raises WheelError saying what is wrong: too large, not a zip, an unsafe member, no or several METADATA, another
    distribution, a version that cannot name a release.
    """
    if len(data) > max_bytes:
        raise WheelError(f"the release is {len(data):,} bytes; at most {max_bytes:,} are accepted")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise WheelError("the release is not a wheel (not a zip file)") from None
    with archive:
        members = archive.infolist()
        if len(members) > _MAX_MEMBERS:
            raise WheelError(f"the wheel has {len(members):,} members; a Storegate release has far fewer")
        for member in members:
            if not safe_member(member.filename):
                raise WheelError(f"the wheel has a member outside its directory: {member.filename[:200]!r}")
            if member.file_size > _MAX_MEMBER_BYTES:
                raise WheelError(f"the wheel's member {member.filename[:200]!r} is {member.file_size:,} bytes")
        metadata = [m for m in members if re.fullmatch(r"[^/]+\.dist-info/METADATA", m.filename)]
        if len(metadata) != 1:
            raise WheelError(f"a wheel has one *.dist-info/METADATA; this one has {len(metadata)}")
        if metadata[0].file_size > _MAX_METADATA_BYTES:
            raise WheelError("the wheel's METADATA is too large")
        try:
            text = archive.read(metadata[0]).decode("utf-8")
        except (UnicodeDecodeError, zipfile.BadZipFile, OSError) as err:
            raise WheelError(f"the wheel's METADATA cannot be read: {err}") from None
    headers = HeaderParser().parsestr(text, headersonly=True)
    name, version = headers.get("Name"), headers.get("Version")
    if name is None or version is None:
        raise WheelError("the wheel's METADATA has no Name or no Version")
    if re.sub(r"[-_.]+", "-", name).lower() != DISTRIBUTION:
        raise WheelError(f"the wheel is of the distribution {name[:100]!r}, not {DISTRIBUTION!r}")
    if not is_release_version(version):
        raise WheelError(f"the wheel's version {version[:100]!r} cannot name a release")
    return WheelInfo(version=version, size=len(data), sha256=sha256_hex(data))
