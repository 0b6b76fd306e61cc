"""The driver families: which there are, and what each one registers about itself.

A family is a package of ``device_drivers`` whose ``__init__.py`` defines ``FAMILY``, a
:class:`DeviceFamily`: the ``kind`` its profiles name, its profile and settings models, its
driver factory (named ``"module:function"`` and imported on first use, so a gateway without,
say, evdev still runs every other family), whether it is an environment sensor (its driver
is then wrapped in the environment monitor), and, for hot-plug, its own port lister when its
devices are not found as USB ports. :mod:`device_drivers.profiles` builds the profile union
and every lookup from these, and the agent's hot-plug scan takes the listers from here, so
neither names a family.

The families are found, not listed: every package directly under ``device_drivers/`` whose
``__init__.py`` defines ``FAMILY`` is one, in the order of the package names. So a new family
is its folder and its profile files in ``firmware_configs/``, and no table elsewhere names it.
Packages without ``FAMILY`` (the toolkit, the environment monitor, the simulators) are not
families. Entry points would let another distribution add a family too, but they live in
installed metadata that goes stale until a reinstall, and every family ships in this repository.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import get_args

import device_drivers
from device_drivers.base import Driver
from device_drivers.ports import DeviceBinding, HotplugSettings, PortLister
from device_drivers.profile_base import ProfileBase, SettingsBase

# A family's own port lister, made from the catalog's profiles of its kind and the agent's [hotplug] settings.
PortListerFactory = Callable[[Sequence[ProfileBase], HotplugSettings], PortLister]


@dataclass(frozen=True, slots=True)
class DeviceFamily:
    """What one driver family tells the gateway about itself (its package's ``FAMILY``)."""

    kind: str  # the ``kind`` of its profiles
    profile: type[ProfileBase]  # the pydantic model of its profile files
    settings: type[SettingsBase]  # the model of a device's ``settings`` in the agent config, every field defaulted
    driver: str  # "module:function" of ``create(*, profile, binding, settings) -> Driver``, imported on first use
    environment: bool = False  # its readings pass through the environment monitor (stale sensors, local alarms)
    port_lister: PortListerFactory | None = None  # for devices hot-plug does not find among USB ports

    def create_driver(self, *, profile: ProfileBase, binding: DeviceBinding, settings: SettingsBase) -> Driver:
        """A new driver from the family's factory (its module imported now, the first time)."""
        module_name, _, function = self.driver.partition(":")
        factory: Callable[..., Driver] = getattr(importlib.import_module(module_name), function)
        return factory(profile=profile, binding=binding, settings=settings)


def family_packages() -> tuple[str, ...]:
    """The packages directly under ``device_drivers/`` that register a family, by name (each imported once)."""
    names = sorted(info.name for info in pkgutil.iter_modules(device_drivers.__path__) if info.ispkg)
    return tuple(
        f"device_drivers.{name}"
        for name in names
        if hasattr(importlib.import_module(f"device_drivers.{name}"), "FAMILY")
    )


@functools.cache
def families() -> tuple[DeviceFamily, ...]:
    """Every family found under ``device_drivers/`` (see the module docstring), in package-name order."""
    return load_families(family_packages())


def load_families(modules: Iterable[str]) -> tuple[DeviceFamily, ...]:
    """The ``FAMILY`` of each module, in order; TypeError for a module that does not register one that fits."""
    found: list[DeviceFamily] = []
    for name in modules:
        family = getattr(importlib.import_module(name), "FAMILY", None)
        if not isinstance(family, DeviceFamily):
            raise TypeError(f"{name} defines no FAMILY = DeviceFamily(...)")
        declared = get_args(family.profile.model_fields["kind"].annotation)
        if declared != (family.kind,):
            raise TypeError(f"{name}: {family.profile.__name__}.kind is one of {declared}, not {family.kind!r}")
        if any(other.kind == family.kind for other in found):
            raise TypeError(f"{name}: kind {family.kind!r} is registered twice")
        found.append(family)
    return tuple(found)
