"""Camera settings and profiles: the documented example is valid, bad settings are refused with their key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from device_drivers.camera.profile import CameraProfile, CameraSettings
from device_drivers.profiles import load_catalog, parse_settings

DOC = Path(__file__).resolve().parents[3] / "docs" / "devices-cameras.md"


def test_the_documented_device_entry_is_valid() -> None:
    block = re.search(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert block is not None
    entry = tomllib.loads(block[1])["devices"][0]
    profile = load_catalog().get(entry["profile"])
    settings = parse_settings(profile, entry["settings"])
    assert isinstance(settings, CameraSettings)
    assert [zone.name for zone in settings.zones] == ["back-door"]
    assert settings.footfall is not None
    assert settings.armed.windows
    assert settings.blur_faces  # on unless a camera turns it off


def test_the_shipped_camera_profiles() -> None:
    catalog = load_catalog()
    usb = catalog.get("usb-uvc-camera")
    stream = catalog.get("ip-camera-rtsp")
    assert isinstance(usb, CameraProfile)
    assert isinstance(stream, CameraProfile)
    assert (usb.transport, usb.v4l_any, usb.width, usb.height) == ("v4l2", True, 640, 480)
    assert (stream.transport, stream.v4l_any) == ("stream", False)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"zones": [{"name": "door", "points": [[0, 0], [10, 10]]}]}, "zones.0.points"),
        ({"masks": [[[0, 0]]]}, "masks.0"),
        ({"footfall": {"start": [0, 0], "end": [0, 0], "inside": [5, 5]}}, "footfall"),
        ({"jpeg_quality": 5}, "jpeg_quality"),
        ({"tamper_sensitivity": "paranoid"}, "tamper_sensitivity"),
        ({"armed": {"time_zone": "Mars/Olympus"}}, "armed.time_zone"),
        ({"armed": {"windows": [{"start": "25:00", "end": "07:00"}]}}, "armed.windows.0.start"),
        ({"blur_face": False}, "blur_face"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(settings: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as raised:
        CameraSettings.model_validate(settings)
    assert key in {".".join(str(part) for part in error["loc"]) for error in raised.value.errors()}
