"""The shelf profile file and the shelf settings: what loads, and what is refused with a reason."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from device_drivers.ports import PortInfo
from device_drivers.profiles import load_catalog, parse_profile, parse_settings
from device_drivers.shelf.profile import ShelfProfile, ShelfSettings
from storegate.configfile import ConfigError
from storegate.wire import DeviceIdentity


def shipped() -> ShelfProfile:
    """The shipped shelf profile, through the catalog as the agent loads it."""
    profile = load_catalog().get("storegate-shelf-v1")
    assert isinstance(profile, ShelfProfile)
    return profile


def test_the_shipped_profile_loads_with_its_sections() -> None:
    profile = shipped()
    assert profile.kind == "shelf"
    assert (profile.shelf.slots, profile.shelf.capacity_g) == (8, 5000.0)
    assert (profile.push.sample_rate_hz, profile.push.filter_window) == (10, 4)
    assert profile.calibration.out_of_range_g > profile.shelf.capacity_g
    assert profile.serial.baudrate == 115200


def test_the_shelf_is_recognised_on_usb_by_ids_and_product_string() -> None:
    catalog = load_catalog()

    def port(product: str) -> PortInfo:
        identity = DeviceIdentity(vendor_id="2e8a", product_id="000a", product=product, serial_number="E6614C31")
        return PortInfo(address="/dev/ttyACM0", identity=identity)

    assert catalog.match(port("Storegate Shelf v1")) == catalog.get("storegate-shelf-v1")
    match = catalog.match(port("Pico"))  # a hobby Pico with the same stdio stack is not a shelf
    assert match is None or match.id != "storegate-shelf-v1"


def _with(**sections: dict[str, Any]) -> dict[str, Any]:
    data = shipped().model_dump()
    for name, values in sections.items():
        data[name] = {**data[name], **values}
    return data


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"calibration": {"settle_tolerance_g": 1.0, "noise_g": 0.5}}, "at least 4 x noise_g"),
        ({"calibration": {"out_of_range_g": 4000.0}}, "must be at least shelf.capacity_g"),
        ({"calibration": {"settle_window_s": 0.1}, "push": {"sample_rate_hz": 10}}, "at least 3 are needed"),
        ({"calibration": {"count_tolerance": 0.5}}, "count_tolerance"),
        ({"push": {"sample_rate_hz": 81}}, "sample_rate_hz"),
        ({"push": {"filter_window": 0}}, "filter_window"),
        ({"shelf": {"slots": 33}}, "slots"),
        ({"shelf": {"load_cells": 8}}, "load_cells"),
    ],
)
def test_an_inconsistent_profile_is_refused_naming_the_key(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_profile(_with(**sections))


def test_settings_from_a_planogram_toml_table() -> None:
    settings = parse_settings(
        shipped(),
        {
            "slots": {"1": {"sku": "COFFEE-250", "unit_weight_g": 250}, "2": {"sku": "LOOSE"}},
            "stock_interval_s": 600,
            "settle_window_s": 2.0,
        },
    )
    assert isinstance(settings, ShelfSettings)
    assert settings.slots[1].unit_weight_g == 250
    assert settings.slots[2].unit_weight_g is None  # weight, no counts
    assert settings.settle_window_s == 2.0
    assert ShelfSettings().slots == {}  # an unconfigured hot-plugged shelf still works


@pytest.mark.parametrize(
    "data",
    [
        {"slots": {"0": {"sku": "A"}}},
        {"slots": {"33": {"sku": "A"}}},
        {"slots": {"1": {"unit_weight_g": 0}}},
        {"slots": {"1": {"sku": ""}}},
        {"slots": {"1": {"weight": 5}}},
        {"stock_interval_s": 0},
        {"settle_tolerance_g": -1},
    ],
)
def test_bad_settings_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ShelfSettings.model_validate(data)
