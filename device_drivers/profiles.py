"""Device profiles: one TOML file per device model in ``firmware_configs/``, validated here.

A profile says how to recognise a model (USB ids, product string, serial-number pattern),
how to talk to it (transport settings, protocol, units), its calibration defaults, and for
our own firmware the settings the gateway pushes when it attaches. Adding a model is a
data file; adding a *kind* of device (a new protocol) is a driver family plus its profile
model, listed in :data:`PROFILE_MODELS`.

Every family module defines three things (see ``docs/devices.md``)::

    class XProfile(ProfileBase): kind: Literal["x"] ...   # what the profile file holds
    class XSettings(SettingsBase): ...                    # per-device site settings, all defaulted
    def create(*, profile: XProfile, binding: DeviceBinding, settings: XSettings) -> Driver
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import Field, TypeAdapter, ValidationError

from device_drivers.barcode.profile import BarcodeProfile, BarcodeSettings
from device_drivers.base import Driver
from device_drivers.door.profile import DoorProfile, DoorSettings
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.modbus_sensor.profile import ModbusSensorProfile
from device_drivers.onewire.profile import OneWireSensorProfile
from device_drivers.ports import DeviceBinding, PortInfo
from device_drivers.profile_base import ProfileBase, SettingsBase
from device_drivers.serial_sensor.profile import SerialSensorProfile
from device_drivers.shelf.profile import ShelfProfile, ShelfSettings
from device_drivers.sht3x.profile import I2cSensorProfile
from storegate.configfile import ConfigError, describe_validation_error

# --------------------------------------------------------------------------- the families

DeviceProfile = Annotated[
    ShelfProfile
    | BarcodeProfile
    | ModbusSensorProfile
    | SerialSensorProfile
    | OneWireSensorProfile
    | I2cSensorProfile
    | DoorProfile,
    Field(discriminator="kind"),
]

# Per-device settings model of each kind.
SETTINGS_MODELS: Final[dict[str, type[SettingsBase]]] = {
    "shelf": ShelfSettings,
    "barcode": BarcodeSettings,
    "modbus-sensor": EnvironmentSettings,
    "serial-sensor": EnvironmentSettings,
    "w1-sensor": EnvironmentSettings,
    "i2c-sensor": EnvironmentSettings,
    "door": DoorSettings,
}

# The driver factory of each kind, as "module:function", imported when first used so that a
# gateway without, say, evdev installed still runs every other kind of device.
FACTORIES: Final[dict[str, str]] = {
    "shelf": "device_drivers.shelf.driver:create",
    "barcode": "device_drivers.barcode.driver:create",
    "modbus-sensor": "device_drivers.modbus_sensor.driver:create",
    "serial-sensor": "device_drivers.serial_sensor.driver:create",
    "w1-sensor": "device_drivers.onewire.driver:create",
    "i2c-sensor": "device_drivers.sht3x.driver:create",
    "door": "device_drivers.door.driver:create",
}

_PROFILE_ADAPTER: Final = TypeAdapter[Any](DeviceProfile)


def parse_profile(data: Mapping[str, Any], *, source: Path | None = None) -> ProfileBase:
    """Validate one profile; raises ConfigError naming the file and each bad key."""
    try:
        profile = _PROFILE_ADAPTER.validate_python(data)
    except ValidationError as err:
        raise ConfigError(source, describe_validation_error(err)) from err
    assert isinstance(profile, ProfileBase)
    return profile


def parse_settings(profile: ProfileBase, data: Mapping[str, Any]) -> SettingsBase:
    """Validate a device's settings against its profile's kind; raises ValidationError."""
    return SETTINGS_MODELS[_kind(profile)].model_validate(data)


def _kind(profile: ProfileBase) -> str:
    kind = getattr(profile, "kind", None)
    if not isinstance(kind, str) or kind not in SETTINGS_MODELS:
        raise ValueError(f"profile {profile.id!r} has no known kind")
    return kind


def kind_of(profile: ProfileBase) -> str:
    """The profile's kind (``shelf``, ``barcode``, ``modbus-sensor``...)."""
    return _kind(profile)


# Kinds whose readings pass through the environment monitor (stale-sensor detection, local alarms).
ENVIRONMENT_KINDS: Final = frozenset({"modbus-sensor", "serial-sensor", "w1-sensor", "i2c-sensor"})


def _load(reference: str) -> Callable[..., Driver]:
    module_name, _, function = reference.partition(":")
    module = importlib.import_module(module_name)
    factory: Callable[..., Driver] = getattr(module, function)
    return factory


def create_driver(profile: ProfileBase, binding: DeviceBinding, settings: SettingsBase) -> Driver:
    """A new driver for one device of this profile (environment sensors wrapped in their monitor)."""
    kind = _kind(profile)
    driver = _load(FACTORIES[kind])(profile=profile, binding=binding, settings=settings)
    if kind in ENVIRONMENT_KINDS:
        from device_drivers.environment.monitor import monitored

        assert isinstance(settings, EnvironmentSettings)
        driver = monitored(driver, binding=binding, settings=settings)
    return driver


@dataclass(frozen=True, slots=True)
class ProfileCatalog:
    """Every known profile by id, and matching of plugged-in ports against them."""

    profiles: Mapping[str, ProfileBase]

    def get(self, profile_id: str) -> ProfileBase:
        """The profile with this id; KeyError naming the known ones when there is none."""
        try:
            return self.profiles[profile_id]
        except KeyError:
            known = ", ".join(sorted(self.profiles)) or "none"
            raise KeyError(f"no device profile {profile_id!r} (known: {known})") from None

    def match(self, port: PortInfo) -> ProfileBase | None:
        """The profile whose USB match fits ``port`` most specifically, or None for an unknown device."""
        best: tuple[int, str, ProfileBase] | None = None
        for profile in self.profiles.values():
            for usb in profile.usb:
                if usb.matches(port):
                    rank = (usb.specificity, profile.id, profile)
                    # Ties go to the alphabetically first id, so the choice never depends on file order.
                    if best is None or rank[0] > best[0] or (rank[0] == best[0] and rank[1] < best[1]):
                        best = rank
        return None if best is None else best[2]


def _profile_files(directory: Path) -> Iterable[Path]:
    return sorted(p for p in directory.rglob("*.toml") if p.is_file())


def load_catalog(*extra_dirs: Path) -> ProfileCatalog:
    """The profiles shipped in ``firmware_configs/`` plus those of ``extra_dirs`` (later ones override).

    Raises ConfigError naming the file and key of the first invalid profile, or a duplicate id.
    """
    shipped = Path(str(resources.files("firmware_configs")))
    profiles: dict[str, ProfileBase] = {}
    sources: dict[str, Path] = {}
    for directory, may_override in ((shipped, False), *((d, True) for d in extra_dirs)):
        seen_here: dict[str, Path] = {}
        for path in _profile_files(directory):
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
                raise ConfigError(path, [f"not a readable TOML file: {err}"]) from err
            profile = parse_profile(data, source=path)
            if profile.id in seen_here:
                raise ConfigError(path, [f"id: {profile.id!r} is also the id of {seen_here[profile.id]}"])
            if profile.id in profiles and not may_override:
                raise ConfigError(path, [f"id: {profile.id!r} is also the id of {sources[profile.id]}"])
            seen_here[profile.id] = path
            profiles[profile.id] = profile
            sources[profile.id] = path
    return ProfileCatalog(profiles=profiles)
