"""The agent's systemd service as the provisioning commands drive it: restart after a config change, stop and start
around a self-test.

systemd runs when its runtime directory exists (``/run/systemd/system``, as ``sd_booted()`` tells; the same test
``storegate provision enroll`` makes). Without it, nothing is started or stopped: the commands say what to do by hand.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog

from provisioning.enroll import SYSTEMD_RUNTIME_DIR
from provisioning.units import AGENT_UNIT

log = structlog.get_logger(__name__)

SYSTEMCTL_TIMEOUT_S: Final = 120.0  # a stop waits for the agent to flush its outbox; never forever


class ServiceError(Exception):
    """systemctl is missing or failed; the message says which command and why."""


def systemctl(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``systemctl args`` (found on PATH); ServiceError when it is not installed or does not answer."""
    program = shutil.which("systemctl")
    if program is None:
        raise ServiceError("systemctl is not installed, though systemd runs")
    try:
        return subprocess.run(
            [program, *args], capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise ServiceError(f"systemctl {' '.join(args)} did not answer in {SYSTEMCTL_TIMEOUT_S:.0f} s") from None


@dataclass(frozen=True)
class AgentService:
    """``storegate-agent.service`` on this gateway."""

    runtime_dir: Path = SYSTEMD_RUNTIME_DIR
    run: Callable[[list[str]], subprocess.CompletedProcess[str]] = field(default=systemctl)
    unit: str = AGENT_UNIT

    @property
    def systemd_runs(self) -> bool:
        """Whether systemd is PID 1 here."""
        return self.runtime_dir.is_dir()

    def active(self) -> bool:
        """Whether systemd runs the agent's unit now (False without systemd)."""
        return self.systemd_runs and self.run(["is-active", "--quiet", self.unit]).returncode == 0

    def restart(self) -> None:
        """Restart the unit (it reads its config again); ServiceError in words when systemctl fails."""
        self._do("restart")

    def stop(self) -> None:
        """Stop the unit and wait until it has stopped (systemctl waits for the job)."""
        self._do("stop")

    def start(self) -> None:
        """Start the unit."""
        self._do("start")

    def by_hand(self) -> str:
        """What to type when this command could not do it."""
        return f"sudo systemctl restart {self.unit}"

    def _do(self, verb: str) -> None:
        done = self.run([verb, self.unit])
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()[:300]
            log.error("agent_service_failed", verb=verb, unit=self.unit, detail=detail)
            raise ServiceError(f"systemctl {verb} {self.unit} failed: {detail or f'exit {done.returncode}'}")
        log.info("agent_service", verb=verb, unit=self.unit)
