"""A ``systemctl`` on PATH for the provisioning commands that drive the agent's service (systemd is not PID 1 here)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioning.service import AgentService

SHIM = """#!/bin/sh
# Records each call; is-active answers from the file `active`; a verb named in the file `fail` fails as systemctl does.
echo "$*" >> "$SHIM_DIR/calls"
if [ -f "$SHIM_DIR/fail" ] && [ "$1" = "$(cat "$SHIM_DIR/fail")" ]; then
    echo "Job for $2 failed because the control process exited with error code." >&2
    exit 1
fi
case "$1" in
    is-active) [ -f "$SHIM_DIR/active" ] || exit 3 ;;
    stop) rm -f "$SHIM_DIR/active" ;;
    start|restart) touch "$SHIM_DIR/active" ;;
esac
"""


@dataclass
class Systemd:
    """systemd as the commands see it: its runtime directory, and the shim's record."""

    directory: Path
    service: AgentService

    @property
    def calls(self) -> list[str]:
        path = self.directory / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def runs_agent(self) -> None:
        (self.directory / "active").touch()

    def fails(self, verb: str) -> None:
        (self.directory / "fail").write_text(verb)


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Systemd:
    shim = tmp_path / "systemd-shim"
    (shim / "runtime").mkdir(parents=True)
    (shim / "systemctl").write_text(SHIM)
    (shim / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    monkeypatch.setenv("SHIM_DIR", str(shim))
    return Systemd(directory=shim, service=AgentService(runtime_dir=shim / "runtime"))
