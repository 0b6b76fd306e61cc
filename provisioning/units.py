"""The systemd units Storegate ships (``provisioning/deploy/systemd/``), filled in for one installation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Final, Literal

UnitName = Literal["storegate-agent.service", "storegate-hub.service", "storegate-firstboot.service"]
AGENT_UNIT: Final[UnitName] = "storegate-agent.service"
HUB_UNIT: Final[UnitName] = "storegate-hub.service"
# Enrolment on first boot (provisioning.bundle): its own placeholder, @ENROLMENT_FILE@, is filled in there.
FIRSTBOOT_UNIT: Final[UnitName] = "storegate-firstboot.service"


@dataclass(frozen=True, slots=True)
class UnitPaths:
    """What a unit template leaves open: the ``storegate`` command, the data directory, the account, the config."""

    executable: Path
    home: Path
    user: str = "storegate"
    config: Path | None = None  # the hub's hub.toml; the agent's is always home/agent.toml
    environment_file: Path | None = None  # the hub's optional hub.env (0600); default: beside hub.toml


def unit_template(name: UnitName) -> str:
    """The unit as shipped, with its ``@...@`` placeholders."""
    return files("provisioning").joinpath("deploy", "systemd", name).read_text(encoding="utf-8")


_USER_NAME: Final = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _unit_path(what: str, path: Path) -> str:
    """``path`` as a unit file may hold it: absolute, one word, its ``%`` escaped from systemd's specifiers."""
    text = str(path)
    if not path.is_absolute():
        raise ValueError(f"the unit's {what} must be an absolute path, not {text!r}")
    if any(char.isspace() or not char.isprintable() for char in text):
        raise ValueError(f"the unit's {what} {text!r} holds a space or a control character; choose another path")
    return text.replace("%", "%%")


def render_unit(name: UnitName, paths: UnitPaths) -> str:
    """The unit ``name`` filled in with ``paths`` (ValueError when the hub's unit has no config, or a bad value)."""
    if name == HUB_UNIT and paths.config is None:
        raise ValueError("the hub's unit needs the path of its hub.toml")
    if not _USER_NAME.fullmatch(paths.user):
        raise ValueError(f"{paths.user!r} is not a system user name (lower-case letters, digits, _ and -)")
    config = paths.config
    environment = paths.environment_file or (config.parent / "hub.env" if config is not None else None)
    text = unit_template(name)
    for placeholder, value in (
        ("@EXEC@", _unit_path("command", paths.executable)),
        ("@HOME@", _unit_path("data directory", paths.home)),
        ("@USER@", paths.user),
        ("@CONFIG@", "" if config is None else _unit_path("config", config)),
        ("@ENVIRONMENT@", "" if environment is None else _unit_path("environment file", environment)),
    ):
        text = text.replace(placeholder, value)
    return text
