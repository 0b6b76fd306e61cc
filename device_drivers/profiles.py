"""Device profiles: one TOML file per device model in ``firmware_configs/``, validated here.

A profile says how to recognise a model (USB ids, product string, serial-number pattern),
how to talk to it (transport settings, protocol, units), its calibration defaults, and for
our own firmware the settings the gateway pushes when it attaches. Adding a model is a
data file; adding a *kind* of device (a new protocol) is a driver family: a package that
registers its profile model, settings model and driver factory (:mod:`device_drivers.families`).
The union of the profile models and every lookup by kind are built here from those registrations.
"""

from __future__ import annotations

import functools
import operator
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import Field, TypeAdapter, ValidationError

from device_drivers.base import Driver
from device_drivers.families import DeviceFamily, families
from device_drivers.ports import DeviceBinding, PortInfo
from device_drivers.profile_base import ProfileBase, SettingsBase
from storegate.configfile import ConfigError, describe_validation_error

# --------------------------------------------------------------------------- the families

# Each registered family by the ``kind`` its profiles name.
FAMILY_OF_KIND: Final[Mapping[str, DeviceFamily]] = {family.kind: family for family in families()}

# One profile of any family, told apart by its ``kind`` (the models in registration order).
DeviceProfile: Final[Any] = Annotated[
    functools.reduce(operator.or_, (family.profile for family in families())),
    Field(discriminator="kind"),
]

_PROFILE_ADAPTER: Final = TypeAdapter[Any](DeviceProfile)


def parse_profile(data: Mapping[str, Any], *, source: Path | None = None) -> ProfileBase:
    """Validate one profile; raises ConfigError naming the file and each bad key."""
    try:
        profile = _PROFILE_ADAPTER.validate_python(data)
    except ValidationError as err:
        raise ConfigError(source, describe_validation_error(err)) from err
    assert isinstance(profile, ProfileBase)
    return profile


def family_of(profile: ProfileBase) -> DeviceFamily:
    """The family that drives devices of this profile; ValueError for a profile of no known kind."""
    kind = getattr(profile, "kind", None)
    family = FAMILY_OF_KIND.get(kind) if isinstance(kind, str) else None
    if family is None:
        raise ValueError(f"profile {profile.id!r} has no known kind")
    return family


def kind_of(profile: ProfileBase) -> str:
    """The profile's kind (``shelf``, ``barcode``, ``modbus-sensor``...)."""
    return family_of(profile).kind


def parse_settings(profile: ProfileBase, data: Mapping[str, Any]) -> SettingsBase:
    """Validate a device's settings against its profile's kind; raises ValidationError."""
    return family_of(profile).settings.model_validate(data)


def create_driver(profile: ProfileBase, binding: DeviceBinding, settings: SettingsBase) -> Driver:
    """A new driver for one device of this profile (environment sensors wrapped in their monitor)."""
    family = family_of(profile)
    driver = family.create_driver(profile=profile, binding=binding, settings=settings)
    if family.environment:
        from device_drivers.environment.monitor import monitored
        from device_drivers.environment.settings import EnvironmentSettings

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

    def of_kind(self, kind: str) -> list[ProfileBase]:
        """The profiles of one kind (``w1-sensor``...), in catalog order."""
        return [profile for profile in self.profiles.values() if getattr(profile, "kind", None) == kind]

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
