"""The technician's path, played for real: a token from the hub's API, one command on a gateway, events at the hub.

Real parts: the hub served by uvicorn on loopback (its CA, its gateway listener over TLS, SQLite), Mosquitto running
the configuration the hub writes (TLS, client certificates, ACL, CRL; the hub rewrites it and sends SIGHUP when the
gateway enrols), ``storegate provision enroll`` and the agent as subprocesses of the installed command, the key made
by openssl in the gateway home. systemd is not PID 1 here, so a ``systemctl`` shim on PATH starts the unit's
ExecStart (with its Environment) in the background, as systemd would.

:func:`technician_enrols` is the technician's first command; the lead extends the path with ``detect`` and
``selftest``. Every command the technician types goes through :meth:`Technician.types`, and the test counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx
from sqlalchemy import func, select

from hub.db.engine import create_engine, session_factory
from hub.db.models import StoredEvent
from hub.settings import HubSettings, load_hub_settings
from launcher.broker import free_port
from provisioning.layout import GatewayHome
from provisioning.units import AGENT_UNIT
from storegate.private_files import is_private
from tests.conftest import eventually, wait_until
from tests.hub.auth.test_sessions import served
from tests.hub.conftest import token_in_database
from tests.tls_broker import HOST, TlsBroker, running_tls_broker

STORE, GATEWAY = "store-0042", "gw-1"
STOREGATE: Final = Path(sys.executable).with_name("storegate")
MAX_COMMANDS: Final = 3  # the promise: a gateway enrolled and tested in at most three typed commands

SYSTEMCTL_SHIM: Final = """#!/bin/sh
# systemctl as far as `storegate provision enroll` and the technician need it; systemd is not PID 1 here.
echo "systemctl $*" >> "$SHIM_DIR/calls"
start() {
    unit="$SHIM_UNIT_DIR/$1"
    command=$(sed -n 's/^ExecStart=//p' "$unit")
    environment=$(sed -n 's/^Environment=//p' "$unit")
    env $environment setsid $command >> "$SHIM_DIR/agent.log" 2>&1 < /dev/null &
    echo $! > "$SHIM_DIR/agent.pid"
}
stop() {
    [ -f "$SHIM_DIR/agent.pid" ] || return 0
    pid=$(cat "$SHIM_DIR/agent.pid")
    kill "$pid" 2>/dev/null || return 0
    tries=0
    while kill -0 "$pid" 2>/dev/null && [ $tries -lt 300 ]; do sleep 0.1; tries=$((tries + 1)); done
}
case "$1" in
    daemon-reload) ;;
    enable) [ "$2" = "--now" ] && start "$3" ;;
    restart) stop; start "$2" ;;
    *) echo "systemctl shim: $1 is not supported" >&2; exit 1 ;;
esac
"""


@dataclass
class Technician:
    """Runs what the technician types on the gateway, with the shim on PATH, and keeps the list of it."""

    workdir: Path
    home: GatewayHome
    unit_dir: Path
    typed: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        shim = self.workdir / "shim"
        return {
            **os.environ,
            "PATH": f"{shim}:{STOREGATE.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "SHIM_DIR": str(shim),
            "SHIM_UNIT_DIR": str(self.unit_dir),
            "STOREGATE_AGENT_HOME": str(self.home.root),
        }

    def install_shim(self) -> None:
        shim = self.workdir / "shim"
        shim.mkdir(parents=True)
        (shim / "systemctl").write_text(SYSTEMCTL_SHIM)
        (shim / "systemctl").chmod(0o755)
        (self.workdir / "systemd-runtime").mkdir()  # as /run/systemd/system is where systemd runs

    def types(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run one typed command (``storegate ...`` or ``systemctl ...``) as the technician would."""
        self.typed.append(" ".join(command))
        program = str(STOREGATE) if command[0] == "storegate" else command[0]
        return subprocess.run(
            [program, *command[1:]], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def agent_pid(self) -> int | None:
        path = self.workdir / "shim" / "agent.pid"
        return int(path.read_text()) if path.exists() else None

    def agent_log(self) -> str:
        path = self.workdir / "shim" / "agent.log"
        return path.read_text() if path.exists() else ""


def technician_enrols(technician: Technician, *, hub_url: str, token: str) -> subprocess.CompletedProcess[str]:
    """The first command on a fresh gateway: enrol with the token and start the agent (one command typed)."""
    return technician.types(
        "storegate",
        "provision",
        "enroll",
        "--hub",
        hub_url,
        "--token",
        token,
        # Where a real gateway takes the defaults (/var/lib/storegate, /etc/systemd/system, /run/systemd/system).
        "--home",
        str(technician.home.root),
        "--unit-dir",
        str(technician.unit_dir),
        "--systemd-runtime-dir",
        str(technician.workdir / "systemd-runtime"),
        "--user",  # the account the package makes on a gateway; here, whoever runs the tests
        getpass.getuser(),
    )


def hub_settings(tls: TlsBroker, workdir: Path) -> HubSettings:
    """The production shape: the hub runs the CA, writes the broker's files and reloads it, serves gateways."""
    pid_file = workdir / "mosquitto.pid"
    pid_file.write_text(f"{tls.broker.process.pid}\n")
    return load_hub_settings(
        None,
        database_url=f"sqlite+aiosqlite:///{workdir / 'hub.sqlite3'}",
        mqtt=tls.hub_settings(),
        client_id="storegate-hub",
        secrets_dir=workdir / "secrets",  # where running_tls_broker made the CA
        http_port=free_port(HOST),
        accept_unknown_gateways=False,
        broker={
            "files_dir": tls.files.directory,
            "port": tls.port,
            "bind_address": HOST,
            "persistence_dir": None,
            "run_as": getpass.getuser(),
            "pid_file": pid_file,
        },
        enrolment={"broker_host": HOST, "broker_port": tls.port},
        snapshots={
            "listen_host": HOST,
            "listen_port": free_port(HOST),
            "tls_certfile": tls.ca.broker_cert_path,
            "tls_keyfile": tls.ca.broker_key_path,
            "directory": workdir / "stills",
        },
    )


@contextlib.contextmanager
def agent_stopped_after(technician: Technician) -> Iterator[None]:
    """Stop the agent the shim started (not our child: the shim ran it under setsid) when the block ends."""
    try:
        yield
    finally:
        pid = technician.agent_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

            def gone() -> bool:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return True
                return False

            wait_until(gone, timeout=20, what="the agent stopped")


@contextlib.asynccontextmanager
async def hub_served(tls: TlsBroker, workdir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, HubSettings]]:
    settings = hub_settings(tls, workdir)
    async with served(settings) as client:
        yield client, settings


async def stored_events(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            count = await session.scalar(
                select(func.count()).select_from(StoredEvent).where(StoredEvent.store_id == STORE)
            )
            return int(count or 0)
    finally:
        await engine.dispose()


async def test_a_technician_enrols_a_fresh_gateway_with_one_command_and_its_events_reach_the_hub(
    tmp_path: Path,
) -> None:
    technician = Technician(
        workdir=tmp_path / "pi", home=GatewayHome(tmp_path / "pi" / "home"), unit_dir=tmp_path / "pi" / "units"
    )
    technician.install_shim()
    with running_tls_broker(tmp_path, ()) as tls, agent_stopped_after(technician):
        async with hub_served(tls, tmp_path) as (hub, settings):
            # At the office (or on the phone): a technician of the store makes a token through the hub's API.
            desk = {"Authorization": f"Bearer {await token_in_database(settings.database_url, 'technician')}"}
            made = await hub.post(
                "/api/v1/enrolment-tokens", json={"store_id": STORE, "gateway_id": GATEWAY}, headers=desk
            )
            assert made.status_code == 201, made.text
            hub_url = str(hub.base_url).rstrip("/")
            assert (
                made.json()["command"] == f"storegate provision enroll --hub {hub_url} --token {made.json()['token']}"
            )

            # On the gateway: one command.
            # (In a thread: the hub serves from this test's event loop.)
            enrolled = await asyncio.to_thread(
                technician_enrols, technician, hub_url=hub_url, token=made.json()["token"]
            )
            assert enrolled.returncode == 0, enrolled.stderr
            assert f"enrolled as {STORE}/{GATEWAY}" in enrolled.stdout
            assert f"{AGENT_UNIT} enabled and started" in enrolled.stdout
            assert is_private(technician.home.key_file)
            calls = (technician.workdir / "shim" / "calls").read_text().splitlines()
            assert calls == ["systemctl daemon-reload", f"systemctl enable --now {AGENT_UNIT}"]

            async def online() -> dict[str, object]:
                answer = await hub.get(f"/api/v1/stores/{STORE}/gateways/{GATEWAY}", headers=desk)
                body: dict[str, object] = answer.json()
                return body if body.get("online") else {}

            gateway = await eventually(
                online, timeout=30, what=f"the agent online at the hub\n{technician.agent_log()}"
            )
            assert gateway["enrolment"] == "token"
            assert gateway["certificate_expires_at"] is not None

            # The technician pastes the device entry (what `detect` prints) and restarts the agent: its readings
            # reach the hub over the broker, TLS with the certificate made for the key the gateway made.
            with technician.home.config.open("a") as config:
                config.write(
                    '\n[[devices]]\ndevice_id = "chiller-1"\ndriver = "simulated-temperature"\ninterval_s = 0.2\n'
                )
            restarted = await asyncio.to_thread(technician.types, "systemctl", "restart", AGENT_UNIT)
            assert restarted.returncode == 0, restarted.stderr

            async def events_stored() -> int:
                return await stored_events(settings.database_url)

            await eventually(events_stored, timeout=30, what=f"events at the hub\n{technician.agent_log()}")
    assert len(technician.typed) <= MAX_COMMANDS, technician.typed
