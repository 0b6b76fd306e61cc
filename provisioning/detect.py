"""``storegate provision detect``: every device plugged in, the profile hot-plug matched, and the entry to paste.

A technician plugs the store's devices into the gateway and wants to know, before writing the config, which of
them the agent will recognise. This lists what the agent's own hot-plug finds (USB serial ports, USB keyboards,
1-Wire probes, printers and cameras, through :func:`edge_agent.hotplug.default_lister`) and matches each with
hot-plug's own matcher (:func:`edge_agent.hotplug.profile_for`): what ``detect`` says is what the agent will do.

For a recognised device it prints the ``[[devices]]`` entry to paste, keyed by the device's stable ``identity``
(its USB serial number, else the port it is plugged into), so its id and settings follow it across unplug and
replug. For an unknown one it prints its ids (USB vendor:product, serial number, maker and product strings) and
what to do. With a config, devices it already names are shown as such, and configured devices that are not
plugged in are listed.

With ``--add`` it appends the entries of recognised devices the config does not name yet (each once: a device is
known by its identity, and a suggested id never reuses one the config has), checks the result loads as the agent
would load it before replacing the file (atomically, 0600, its owner kept), and restarts the agent's service when
systemd runs (otherwise it says how to restart the agent by hand).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import structlog
import tomli_w
from pydantic import BaseModel, ConfigDict, Field

from device_drivers.ports import PortInfo, PortLister
from device_drivers.profiles import ProfileCatalog, kind_of, load_catalog
from edge_agent.config import AgentConfig, HotplugConfig, ProfiledDeviceConfig, catalog_of, load_agent_config
from edge_agent.hotplug import default_lister, identifiable, profile_for
from provisioning.service import AgentService, ServiceError
from storegate.configfile import ConfigError
from storegate.private_files import write_private
from storegate.process import EXIT_CONFIG

# The word a suggested device id begins with, by profile kind ("scanner-1", "shelf-2").
_ID_WORDS: Final = {
    "barcode": "scanner",
    "shelf": "shelf",
    "printer": "printer",
    "door": "door",
    "camera": "camera",
    "w1-sensor": "probe",
    "i2c-sensor": "sensor",
    "serial-sensor": "sensor",
    "modbus-sensor": "sensor",
}
_UNSAFE: Final = re.compile(r"[^a-z0-9-]+")

log = structlog.get_logger(__name__)


class DetectedDevice(BaseModel):
    """One port hot-plug found, and what the agent would make of it."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field(description="where it is now, e.g. /dev/ttyACM0 (it may change on replug)")
    identity: str = Field(description="its stable key: the [[devices]] identity")
    usb_id: str | None = Field(default=None, description="USB vendor:product, hex")
    serial_number: str | None = None
    maker: str | None = None
    product: str | None = None
    profile: str | None = Field(default=None, description="the profile hot-plug matched; None: unknown device")
    kind: str | None = None
    configured_as: str | None = Field(default=None, description="the device_id the config gives it already")
    suggested_device_id: str | None = None
    toml: str | None = Field(default=None, description="the [[devices]] entry to paste into agent.toml")
    advice: str = Field(description="what to do, in words")


class DetectReport(BaseModel):
    """``storegate provision detect --json``."""

    model_config = ConfigDict(extra="forbid")

    devices: list[DetectedDevice]
    not_plugged_in: list[str] = Field(
        default_factory=list, description="device_ids of the config's hot-plugged devices that were not found"
    )
    added: list[str] = Field(default_factory=list, description="device_ids --add appended to the config")


def detect(ports: Sequence[PortInfo], catalog: ProfileCatalog, config: AgentConfig | None = None) -> DetectReport:
    """What hot-plug makes of ``ports`` (pure: the caller lists them)."""
    configured = {
        device.identity: device
        for device in (config.devices if config is not None else [])
        if isinstance(device, ProfiledDeviceConfig) and device.identity is not None
    }
    taken = {device.device_id for device in (config.devices if config is not None else [])}
    numbers: Counter[str] = Counter()
    found: list[DetectedDevice] = []
    for port in sorted(ports, key=lambda p: p.address):
        if not identifiable(port):
            continue  # hot-plug ignores a port that does not say who it is; so does detect
        found.append(_describe(port, catalog, configured.get(port.stable_key), taken, numbers))
    seen = {device.identity for device in found}
    missing = sorted(device.device_id for key, device in configured.items() if key not in seen)
    return DetectReport(devices=found, not_plugged_in=missing)


def _describe(
    port: PortInfo,
    catalog: ProfileCatalog,
    configured: ProfiledDeviceConfig | None,
    taken: set[str],
    numbers: Counter[str],
) -> DetectedDevice:
    ident = port.identity
    usb_id = f"{ident.vendor_id}:{ident.product_id or '????'}" if ident.vendor_id else None
    common = {
        "address": port.address,
        "identity": port.stable_key,
        "usb_id": usb_id,
        "serial_number": ident.serial_number,
        "maker": ident.manufacturer,
        "product": ident.product,
    }
    if configured is not None:
        return DetectedDevice(
            **common,
            profile=configured.profile,
            configured_as=configured.device_id,
            advice=f"already in the config as {configured.device_id!r} (profile {configured.profile})",
        )
    profile = profile_for(catalog, port)
    if profile is None:
        ids = ", ".join(
            f"{name} {value}"
            for name, value in (("USB", usb_id), ("serial number", ident.serial_number), ("product", ident.product))
            if value
        )
        return DetectedDevice(
            **common,
            advice=f"no profile knows this device ({ids}): if it is a model Storegate supports, add a profile for "
            "its USB ids to hotplug.profiles_dir (see firmware_configs/); or add a [[devices]] entry with "
            f'identity = "{port.stable_key}" and the profile of a compatible model',
        )
    kind = kind_of(profile)
    device_id = _suggest_id(_ID_WORDS.get(kind, kind), taken, numbers)
    # tomli_w writes a list of tables inline (devices = [{...}]): the keys are dumped, the header written here.
    entry = "[[devices]]\n" + tomli_w.dumps(
        {"device_id": device_id, "profile": profile.id, "identity": port.stable_key}
    )
    return DetectedDevice(
        **common,
        profile=profile.id,
        kind=kind,
        suggested_device_id=device_id,
        toml=entry,
        advice=f"{profile.vendor} {profile.model}: paste the entry into agent.toml (rename device_id if you like)",
    )


def _suggest_id(word: str, taken: set[str], numbers: Counter[str]) -> str:
    word = _UNSAFE.sub("-", word.lower()).strip("-") or "device"
    while True:
        numbers[word] += 1
        candidate = f"{word}-{numbers[word]}"
        if candidate not in taken:
            taken.add(candidate)
            return candidate


def describe_report(report: DetectReport) -> str:
    """The report for a terminal: each device, its profile and entry, or its ids and what to do."""
    if not report.devices:
        lines = [
            "no devices found: plug them in (USB, 1-Wire) and run detect again; a device on a built-in serial port "
            "or a bus (RS-485, I2C, GPIO) is not found by hot-plug: configure it by its address"
        ]
    else:
        known = sum(1 for device in report.devices if device.profile is not None)
        lines = [f"{len(report.devices)} device(s) found, {known} recognised:"]
    for device in report.devices:
        lines.append("")
        name = device.configured_as or device.suggested_device_id or "unknown device"
        lines.append(f"{device.address}: {name}" + (f" (profile {device.profile})" if device.profile else ""))
        ids = [f"identity {device.identity}"]
        ids += [f"USB {device.usb_id}"] if device.usb_id else []
        ids += [f"serial number {device.serial_number}"] if device.serial_number else []
        ids += [f"{device.maker or ''} {device.product or ''}".strip()] if device.maker or device.product else []
        lines.append("  " + ", ".join(ids))
        lines.append(f"  {device.advice}")
        if device.toml is not None:
            lines += [f"    {line}" for line in device.toml.strip().splitlines()]
    if report.not_plugged_in:
        lines.append("")
        lines.append("configured but not plugged in: " + ", ".join(report.not_plugged_in))
    return "\n".join(lines)


def add_detected(config_path: Path, report: DetectReport) -> list[DetectedDevice]:
    """Append the entries of ``report``'s recognised devices the config does not name yet; the devices added.

    The config is replaced only by a whole file that loads (ConfigError otherwise, the file untouched): written
    beside it 0600, given the old file's owner (when run as root, so the agent's account still reads it), checked
    with the agent's own loader, then renamed over it.
    """
    new = [device for device in report.devices if device.toml is not None and device.configured_as is None]
    if not new:
        return []
    text = config_path.read_text(encoding="utf-8").rstrip("\n") + "\n" + "".join("\n" + d.toml for d in new if d.toml)
    candidate = config_path.with_name(f".{config_path.name}.adding")
    write_private(candidate, text)
    try:
        old = config_path.stat()
        if os.geteuid() == 0:
            os.chown(candidate, old.st_uid, old.st_gid)
        load_agent_config(candidate)
        os.replace(candidate, config_path)
    finally:
        candidate.unlink(missing_ok=True)
    return new


def run_detect(
    config_path: Path | None,
    *,
    as_json: bool,
    lister: PortLister | None = None,
    add: bool = False,
    service: AgentService | None = None,
) -> tuple[str, int]:
    """``storegate provision detect``: the report (text or JSON) and the exit code.

    0: every device found is recognised or configured; 1: an unknown device, or a configured one not plugged in
    (with ``add``: or the agent could not be restarted); 2: the config cannot be read (with ``add``: or would not
    load with the entries added; it is left as it was). Without a config, the shipped profiles and the default
    [hotplug] settings; ``add`` needs one.
    """
    config: AgentConfig | None = None
    if config_path is not None:
        try:
            config = load_agent_config(config_path)
        except ConfigError as err:
            return str(err), EXIT_CONFIG
    elif add:
        return "--add needs the agent's config (--config)", EXIT_CONFIG
    catalog = catalog_of(config) if config is not None else load_catalog()
    hotplug = config.hotplug if config is not None else HotplugConfig()
    ports = (lister or default_lister(hotplug, catalog)).list_ports()
    report = detect(ports, catalog, config)
    said: list[str] = []
    restart_failed = False
    if add and config_path is not None:
        try:
            added = add_detected(config_path, report)
        except ConfigError as err:
            log.error("detect_add_refused", config=str(config_path), error=str(err)[:500])
            return f"nothing added: {config_path} would not load with the entries added:\n{err}", EXIT_CONFIG
        if added:
            report = detect(ports, catalog, load_agent_config(config_path))  # as the agent will see them now
            report.added = [device.suggested_device_id or device.identity for device in added]
            log.info("detect_added", config=str(config_path), devices=report.added)
            said += [
                f"added {device.suggested_device_id} ({device.profile}, identity {device.identity}) to {config_path}"
                for device in added
            ]
            said_service, restart_failed = _restart_agent(service or AgentService(), config_path)
            said += said_service
        else:
            said.append(f"nothing to add: {config_path} names every recognised device plugged in")
    trouble = report.not_plugged_in or any(device.profile is None for device in report.devices) or restart_failed
    text = report.model_dump_json(indent=2) if as_json else "\n".join([describe_report(report), "", *said]).rstrip()
    return text, 1 if trouble else 0


def _restart_agent(service: AgentService, config_path: Path) -> tuple[list[str], bool]:
    """Restart the agent's service so it runs the added devices; what happened in words, and whether it failed."""
    if not service.systemd_runs:
        return [
            f"systemd is not running here (no {service.runtime_dir}): restart the agent by hand to use them "
            f"(stop it, then start `storegate agent --config {config_path}` again)"
        ], False
    try:
        service.restart()
    except ServiceError as err:
        return [f"the agent was not restarted: {err}; restart it by hand: {service.by_hand()}"], True
    return [f"restarted {service.unit}: the agent now runs the added devices"], False
