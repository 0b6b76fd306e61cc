"""Where a gateway keeps its files: one directory, the *gateway home* (``/var/lib/storegate`` by default).

Everything the agent writes lives under it, so the systemd unit can make the rest of the system read-only
(``ProtectSystem=strict`` with ``StateDirectory=storegate``) and a backup or a wipe is one directory:

    /var/lib/storegate/
        agent.toml          the agent's config (0600): written by enrolment, replaced by the hub's config pushes
        agent.toml.previous the config before the last push, kept until the new one passes its probation
        tls/ca.pem          the hub's CA certificate
        tls/gateway.pem     this gateway's certificate (renewed by the agent before it expires)
        tls/gateway.key     its private key (0600; generated here, never leaves the gateway)
        outbox.sqlite       events waiting for the hub's ack
        releases/<version>/ agent software releases installed beside each other (the updater's)
        current             which release runs (a symlink into releases/)

``STOREGATE_AGENT_HOME`` moves the home (tests, a second agent on a bench Pi); ``STOREGATE_AGENT_CONFIG`` names a
config file elsewhere. ``storegate agent`` and ``storegate agent status`` without ``--config`` use
:func:`default_config_path`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_HOME: Final = Path("/var/lib/storegate")
HOME_ENV: Final = "STOREGATE_AGENT_HOME"
CONFIG_ENV: Final = "STOREGATE_AGENT_CONFIG"


@dataclass(frozen=True, slots=True)
class GatewayHome:
    """The paths of one gateway home (nothing is created by naming them)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "agent.toml"

    @property
    def previous_config(self) -> Path:
        return self.root / "agent.toml.previous"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def cert_file(self) -> Path:
        return self.tls_dir / "gateway.pem"

    @property
    def key_file(self) -> Path:
        return self.tls_dir / "gateway.key"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox.sqlite"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def current_release(self) -> Path:
        return self.root / "current"


def gateway_home(environ: Mapping[str, str] | None = None) -> GatewayHome:
    """The gateway home: ``STOREGATE_AGENT_HOME`` if set, else :data:`DEFAULT_HOME`."""
    env = os.environ if environ is None else environ
    return GatewayHome(Path(env.get(HOME_ENV) or DEFAULT_HOME))


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The agent config used when none is named: ``STOREGATE_AGENT_CONFIG``, else the gateway home's."""
    env = os.environ if environ is None else environ
    named = env.get(CONFIG_ENV)
    return Path(named) if named else gateway_home(env).config
