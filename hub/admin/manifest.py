"""The manifest beside every backup: its SHA-256, and an HMAC-SHA256 when a backup key is configured.

``storegate hub backup FILE`` writes ``FILE.manifest.json``; ``storegate hub restore FILE`` reads it
and checks the backup against it before anything else is touched. The SHA-256 catches a backup changed
by accident or by someone who did not bother with the manifest; the HMAC, keyed with
``<secrets_dir>/backup.key`` (or ``--key-file``), catches someone who rewrote both, since they would
need the key. The backup file itself stays a plain SQLite file or pg_dump archive that its own tools read.

What is refused, and what ``--unverified`` lets through:

========================================================  ==================  ==================
the backup                                                 refused             with --unverified
========================================================  ==================  ==================
its SHA-256, size or kind differ from the manifest        yes                 yes, always
its manifest's HMAC is wrong for the key                  yes                 yes, always
no manifest                                                yes                 restored
a signed manifest, and no key to check it with            yes                 restored (SHA-256 checked)
an unsigned manifest, and a key is configured             yes                 restored (SHA-256 checked)
an unsigned manifest, and no key configured               no (SHA-256 only)   restored (SHA-256 checked)
========================================================  ==================  ==================
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

from hub.errors import HubError
from storegate.private_files import create_private_once, is_private, write_private

MANIFEST_SUFFIX: Final = ".manifest.json"
MANIFEST_FORMAT: Final = "storegate-hub-backup/1"
BACKUP_KEY_FILE: Final = "backup.key"
KEY_BYTES: Final = 32
MIN_KEY_BYTES: Final = 16
CHUNK_BYTES: Final = 1 << 20

Verification = Literal["signed", "checksum", "unverified"]


class ManifestError(HubError):
    """A backup does not match its manifest, or has none, or the manifest or key is unusable."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """What a backup file was when it was written."""

    kind: str  # "sqlite" or "postgresql"
    size: int
    sha256: str
    revision: str
    hmac_sha256: str | None = None

    def signed_bytes(self) -> bytes:
        """The bytes the HMAC covers: every field but the HMAC, in one canonical JSON form."""
        fields = {
            "format": MANIFEST_FORMAT,
            "kind": self.kind,
            "size": self.size,
            "sha256": self.sha256,
            "revision": self.revision,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def signed(self, key: bytes) -> Manifest:
        """This manifest with its HMAC under ``key``."""
        return replace(self, hmac_sha256=hmac.new(key, self.signed_bytes(), hashlib.sha256).hexdigest())

    def to_json(self) -> str:
        """The manifest file's text."""
        fields: dict[str, Any] = {"format": MANIFEST_FORMAT, "kind": self.kind, "size": self.size}
        fields |= {"sha256": self.sha256, "revision": self.revision, "hmac_sha256": self.hmac_sha256}
        return json.dumps(fields, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, *, path: Path) -> Manifest:
        """The manifest in ``text``; ManifestError naming ``path`` when it is not one."""
        try:
            fields = json.loads(text)
            if not isinstance(fields, dict) or fields.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"not a {MANIFEST_FORMAT} manifest")
            signature = fields.get("hmac_sha256")
            manifest = cls(
                kind=str(fields["kind"]),
                size=int(fields["size"]),
                sha256=str(fields["sha256"]),
                revision=str(fields["revision"]),
                hmac_sha256=None if signature is None else str(signature),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise ManifestError(f"{path} is not a usable backup manifest ({err})") from None
        return manifest


def manifest_path(backup: Path) -> Path:
    """Where the manifest of ``backup`` lives: beside it, ``<name>.manifest.json``."""
    return backup.with_name(backup.name + MANIFEST_SUFFIX)


def digest_file(path: Path) -> tuple[str, int]:
    """The hex SHA-256 and the size of a file."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def copy_digesting(source: Path, destination: Path) -> tuple[str, int]:
    """Copy ``source`` to an existing private ``destination``; the SHA-256 and size of what was copied.

    Restores check the copy they go on to use, never the original again, so a file changed after the
    check is not what gets restored.
    """
    digest = hashlib.sha256()
    size = 0
    with source.open("rb") as reader, destination.open("wb") as writer:
        while chunk := reader.read(CHUNK_BYTES):
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return digest.hexdigest(), size


def write_manifest(backup: Path, manifest: Manifest) -> Path:
    """Write ``backup``'s manifest beside it (0600, atomically); returns its path."""
    path = manifest_path(backup)
    write_private(path, manifest.to_json())
    return path


def read_manifest(backup: Path) -> Manifest | None:
    """The manifest beside ``backup``; None when there is none."""
    path = manifest_path(backup)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"cannot read {path}: {err}") from None
    return Manifest.from_json(text, path=path)


def check_backup(
    manifest: Manifest | None,
    *,
    backup: Path,
    kind: str,
    sha256: str,
    size: int,
    key: bytes | None,
    unverified: bool,
) -> Verification:
    """How far ``backup`` (read as ``sha256`` and ``size``) is verified; ManifestError when it is refused."""
    if manifest is None:
        if unverified:
            return "unverified"
        raise ManifestError(
            f"{backup} has no manifest ({manifest_path(backup).name}), so nothing shows it is the backup that was "
            "written; pass --unverified to restore it anyway"
        )
    if manifest.kind != kind:
        raise ManifestError(f"{backup}'s manifest says it is a {manifest.kind} backup, not {kind}")
    if manifest.size != size or not hmac.compare_digest(manifest.sha256, sha256):
        raise ManifestError(
            f"{backup} does not match its manifest (SHA-256 {sha256[:12]}..., {size:,} bytes; the manifest says "
            f"{manifest.sha256[:12]}..., {manifest.size:,} bytes): it was changed or damaged after the backup"
        )
    if manifest.hmac_sha256 is not None and key is not None:
        expected = manifest.signed(key).hmac_sha256 or ""
        if not hmac.compare_digest(expected, manifest.hmac_sha256):
            raise ManifestError(
                f"{backup}'s manifest is not signed with this backup key: the backup and its manifest were "
                "rewritten, or the key is another one (--key-file)"
            )
        return "signed"
    if (manifest.hmac_sha256 is None and key is None) or unverified:
        return "checksum"  # no key anywhere: the SHA-256 is all there is to check
    if manifest.hmac_sha256 is not None:
        raise ManifestError(
            f"{backup}'s manifest is signed, and there is no backup key to check it: give the key with --key-file "
            "(or copy the hub's backup.key into its secrets_dir), or pass --unverified to trust the SHA-256 alone"
        )
    raise ManifestError(
        f"{backup}'s manifest is not signed, though a backup key is configured: anyone could have written it; "
        "pass --unverified to trust the SHA-256 alone"
    )


def load_key(path: Path, *, create: bool) -> bytes | None:
    """The backup key in ``path`` (hex); made (0600) when missing and ``create``, else None when missing."""
    if not path.exists():
        if not create:
            return None
        create_private_once(path, secrets.token_hex(KEY_BYTES) + "\n")  # never replaces a key another backup made
    if not is_private(path):
        raise ManifestError(f"{path} may be read by others: make it 0600 (chmod 600 {path})")
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as err:
        raise ManifestError(f"{path} is not a usable backup key (hex, one line): {err}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ManifestError(f"{path} is too short for a backup key: at least {MIN_KEY_BYTES} bytes")
    return key
