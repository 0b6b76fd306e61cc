"""The systemd units Storegate ships (``provisioning/deploy/systemd/``), filled in for one installation."""

from __future__ import annotations

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


def unit_template(name: UnitName) -> str:
    """The unit as shipped, with its ``@...@`` placeholders."""
    return files("provisioning").joinpath("deploy", "systemd", name).read_text(encoding="utf-8")


def render_unit(name: UnitName, paths: UnitPaths) -> str:
    """The unit ``name`` filled in with ``paths`` (ValueError when the hub's unit has no config)."""
    if name == HUB_UNIT and paths.config is None:
        raise ValueError("the hub's unit needs the path of its hub.toml")
    text = unit_template(name)
    for placeholder, value in (
        ("@EXEC@", str(paths.executable)),
        ("@HOME@", str(paths.home)),
        ("@USER@", paths.user),
        ("@CONFIG@", str(paths.config)),
    ):
        text = text.replace(placeholder, value)
    return text
