"""The family registry: every family registers itself from its package, and the lookups are built from it."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from device_drivers.environment.monitor import MonitoredDriver
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.families import DeviceFamily, families, family_packages, load_families
from device_drivers.ports import DeviceBinding
from device_drivers.profile_base import ProfileBase, SettingsBase
from device_drivers.profiles import create_driver, family_of, load_catalog, parse_settings

# Every family's kind, in the order of their packages' names (barcode, door, modbus_sensor, onewire...).
ADDRESSES = {
    "barcode": "/dev/ttyACM9",
    "camera": "/dev/video9",
    "door": "gpio:17",
    "modbus-sensor": "/dev/ttyUSB9",
    "w1-sensor": "/sys/bus/w1/devices/28-000000000000",
    "printer": "/dev/usb/lp9",
    "serial-sensor": "/dev/ttyUSB9",
    "shelf": "/dev/ttyACM9",
    "i2c-sensor": "i2c-1:0x44",
}


def test_every_family_package_registers_its_family_in_order() -> None:
    registered = families()
    assert [f.kind for f in registered] == list(ADDRESSES)
    assert len(registered) == len(family_packages())
    assert [f.kind for f in registered if f.environment] == [
        "modbus-sensor",
        "w1-sensor",
        "serial-sensor",
        "i2c-sensor",
    ]
    assert [f.kind for f in registered if f.port_lister is not None] == ["camera", "w1-sensor", "printer"]


def test_every_shipped_profile_finds_its_family_settings_and_driver() -> None:
    catalog = load_catalog()
    assert {family_of(p).kind for p in catalog.profiles.values()} == set(ADDRESSES)
    for profile in catalog.profiles.values():
        family = family_of(profile)
        settings = parse_settings(profile, {})
        assert type(settings) is family.settings
        driver = create_driver(profile, DeviceBinding(device_id="d-1", address=ADDRESSES[family.kind]), settings)
        # Environment sensors come wrapped in the monitor (stale sensors, local alarms); the others do not.
        assert isinstance(driver, MonitoredDriver) is family.environment
        assert driver.health().state == "closed"


class OtherProfile(ProfileBase):
    """A profile of a kind no family of the tests registers."""

    kind: Literal["other"]


@pytest.fixture
def fake_modules() -> Iterator[dict[str, types.ModuleType]]:
    """Modules the test fills with registrations, importable by name while it runs."""
    made: dict[str, types.ModuleType] = {}
    yield made
    for name in made:
        sys.modules.pop(name, None)


def _module(made: dict[str, types.ModuleType], name: str, family: object) -> str:
    module = types.ModuleType(name)
    if family is not None:
        module.FAMILY = family  # type: ignore[attr-defined]
    made[name] = sys.modules[name] = module
    return name


def test_a_registration_that_does_not_fit_is_refused(fake_modules: dict[str, types.ModuleType]) -> None:
    other = DeviceFamily(kind="other", profile=OtherProfile, settings=SettingsBase, driver="x:create")
    wrong_kind = DeviceFamily(kind="another", profile=OtherProfile, settings=SettingsBase, driver="x:create")
    assert load_families([_module(fake_modules, "fake_other", other)]) == (other,)
    with pytest.raises(TypeError, match="fake_none defines no FAMILY"):
        load_families([_module(fake_modules, "fake_none", None)])
    with pytest.raises(TypeError, match=r"OtherProfile.kind is one of \('other',\), not 'another'"):
        load_families([_module(fake_modules, "fake_wrong", wrong_kind)])
    with pytest.raises(TypeError, match="kind 'other' is registered twice"):
        load_families(["fake_other", _module(fake_modules, "fake_again", other)])


def test_drivers_and_their_libraries_are_imported_only_when_a_driver_is_made() -> None:
    # A gateway without evdev (or gpiozero, smbus2...) still loads every profile and runs every other family.
    probe = (
        "import sys\n"
        "from device_drivers.profiles import load_catalog, parse_settings\n"
        "import edge_agent.hotplug\n"
        "catalog = load_catalog()\n"
        "for profile in catalog.profiles.values():\n"
        "    parse_settings(profile, {})\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('evdev', 'gpiozero', 'smbus2', 'pymodbus')"
        " or m.endswith('.driver')]\n"
        "print(sorted(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_environment_settings_are_the_settings_of_every_environment_family() -> None:
    assert {f.settings for f in families() if f.environment} == {EnvironmentSettings}


NEW_FAMILY_INIT = '''
"""A lux meter family that exists only in this test: its folder is all it takes."""

from typing import Literal

from device_drivers.families import DeviceFamily
from device_drivers.profile_base import ProfileBase, SettingsBase


class LuxMeterProfile(ProfileBase):
    kind: Literal["lux-meter"]
    max_lux: int


class LuxMeterSettings(SettingsBase):
    zone: str = "sales-floor"


FAMILY = DeviceFamily(
    kind="lux-meter",
    profile=LuxMeterProfile,
    settings=LuxMeterSettings,
    driver="device_drivers.lux_meter.driver:create",
)
'''

# The factory answers what it was given, so the test sees the profile, settings and binding arrive.
NEW_FAMILY_DRIVER = """
def create(*, profile, binding, settings):
    return ("lux-meter driver", profile.max_lux, settings.zone, binding.address)
"""

NEW_FAMILY_PROFILE = """
id = "acme-lux-2000"
kind = "lux-meter"
vendor = "Acme"
model = "Lux 2000"
max_lux = 20000
"""


def test_a_new_family_is_its_folder_and_a_profile_file(tmp_path: Path) -> None:
    # Nothing outside the family's folder and its data file names it: a folder beside the shipped families (here on
    # device_drivers' package path, as a folder in device_drivers/ would be) and a profile file are found.
    folder = tmp_path / "families" / "lux_meter"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(NEW_FAMILY_INIT)
    (folder / "driver.py").write_text(NEW_FAMILY_DRIVER)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "acme-lux-2000.toml").write_text(NEW_FAMILY_PROFILE)
    probe = (
        "import sys, device_drivers\n"
        f"device_drivers.__path__.append({str(tmp_path / 'families')!r})\n"
        "from pathlib import Path\n"
        "from device_drivers.ports import DeviceBinding\n"
        "from device_drivers.profiles import create_driver, family_of, load_catalog, parse_settings\n"
        f"catalog = load_catalog(Path({str(profiles)!r}))\n"
        "profile = catalog.get('acme-lux-2000')\n"
        "settings = parse_settings(profile, {'zone': 'bakery'})\n"
        "print(family_of(profile).kind)\n"
        "print(create_driver(profile, DeviceBinding(device_id='lux-1', address='i2c-1:0x23'), settings))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["lux-meter", "('lux-meter driver', 20000, 'bakery', 'i2c-1:0x23')"]
