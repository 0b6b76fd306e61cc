"""What an upload must be before the hub keeps it (pure checks, no listener), and the listener's settings."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from hub.snapshots.gateway_api import common_name
from hub.snapshots.settings import SnapshotSettings
from hub.snapshots.store import SnapshotRefusedError, check_still


def jpeg(size: tuple[int, int] = (32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, "JPEG")
    return buffer.getvalue()


def refusal(ref: str, data: bytes, *, max_bytes: int = 1 << 20, max_pixels: int = 1 << 20) -> tuple[int, str]:
    with pytest.raises(SnapshotRefusedError) as caught:
        check_still(ref, data, max_bytes=max_bytes, max_pixels=max_pixels)
    return caught.value.status, caught.value.reason


def test_a_whole_jpeg_under_its_own_hash_passes() -> None:
    data = jpeg()
    info = check_still(hashlib.sha256(data).hexdigest(), data, max_bytes=1 << 20, max_pixels=1 << 20)
    assert (info.size, info.width, info.height) == (len(data), 32, 24)


def test_each_kind_of_bad_upload_has_its_status_and_reason() -> None:
    data = jpeg()
    ref = hashlib.sha256(data).hexdigest()
    truncated = data[: len(data) // 2]
    big = jpeg((400, 300))
    assert refusal("../../etc/passwd", data) == (422, "bad_ref")
    assert refusal(ref.upper(), data) == (422, "bad_ref")
    assert refusal(ref, data, max_bytes=len(data) - 1) == (413, "too_large")
    assert refusal(hashlib.sha256(b"GIF89a").hexdigest(), b"GIF89a") == (415, "not_jpeg")
    assert refusal(hashlib.sha256(truncated).hexdigest(), truncated) == (415, "not_jpeg")
    assert refusal("0" * 64, data) == (422, "hash_mismatch")
    assert refusal(hashlib.sha256(big).hexdigest(), big, max_pixels=400 * 300 - 1) == (413, "too_many_pixels")


def test_the_common_name_comes_from_the_certificates_subject() -> None:
    peer = {"subject": ((("organizationalUnitName", "gateway"),), (("commonName", "store-a/gw-1"),))}
    assert common_name(peer) == "store-a/gw-1"
    assert common_name({}) is None
    assert common_name(None) is None


def test_a_listener_needs_its_certificate(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="tls_certfile"):
        SnapshotSettings(listen_port=8443)
    settings = SnapshotSettings(listen_port=8443, tls_certfile=tmp_path / "c.pem", tls_keyfile=tmp_path / "k.pem")
    assert (settings.retention_days, settings.max_bytes) == (30.0, 2 * 1024 * 1024)
