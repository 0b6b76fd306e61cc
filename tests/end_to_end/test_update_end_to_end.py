"""Issue 15's proof of software updates: two releases of this project are built, a running agent is updated from one
to the other through the hub's API, and a deliberately broken third release is rolled back on its own.

Everything is real: wheels built from copies of this source tree with ``pip wheel --no-deps --no-build-isolation``
(the broken one is release 2's wheel with a module that raises, saving a third build),
Mosquitto running the hub's TLS configuration, the hub with its gateway listener (client certificates), and the
agent started as the systemd unit starts it (``python -m launcher agent --config <home>/agent.toml``), numbering its
readings (the simulated-sequence device), so the hub can tell that none was lost or stored twice across switches.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from sqlalchemy import select

from device_drivers.simulated.sequence import reading_number
from edge_agent.updates import current_release, install_wheel, switch_current
from hub.db.models import Gateway, StoredEvent
from hub.fleet import registry
from hub.settings import load_hub_settings
from launcher.broker import free_port
from storegate import wire
from storegate.private_files import write_private
from tests.conftest import eventually
from tests.hub.conftest import RunningHub, running_hub
from tests.procs import Service
from tests.tls_broker import HOST, STORE_A, TlsBroker, running_tls_broker

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("storegate", "launcher", "edge_agent", "hub", "device_drivers", "provisioning", "firmware_configs")
V1, V2, V3 = "0.1.0+test1", "0.1.0+test2", "0.1.0+test3"
BROKEN = "raise RuntimeError('release 3 is broken')\n"
WHEEL = {"Content-Type": "application/octet-stream"}


def _source_tree(into: Path, version: str) -> Path:
    into.mkdir(parents=True)
    for name in SOURCES:
        shutil.copytree(ROOT / name, into / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "README.md", into / "README.md")
    text = (ROOT / "pyproject.toml").read_text()
    assert '\nversion = "0.1.0"\n' in text
    (into / "pyproject.toml").write_text(text.replace('\nversion = "0.1.0"\n', f'\nversion = "{version}"\n', 1))
    return into


def _broken_copy(wheel: Path, version: str) -> Path:
    """Release 2's wheel made into ``version``, whose agent raises as its code is imported (before it can report)."""
    source_version = wheel.name.split("-")[1]
    out = wheel.with_name(f"storegate-{version}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as original, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as broken:
        for member in original.infolist():
            data = original.read(member)
            name = member.filename.replace(f"storegate-{source_version}.dist-info", f"storegate-{version}.dist-info")
            if name.endswith(".dist-info/METADATA"):
                data = data.replace(f"Version: {source_version}".encode(), f"Version: {version}".encode())
            if name == "edge_agent/__init__.py":
                data += BROKEN.encode()
            broken.writestr(name, data)
    return out


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two releases of this project built side by side (test1, test2), and test3: test2 raising at import."""
    work = tmp_path_factory.mktemp("releases")
    out = work / "wheels"
    builds = []
    for version in (V1, V2):
        tree = _source_tree(work / version, version)
        command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
        builds.append(subprocess.Popen([*command, "-w", str(out), str(tree)], stderr=subprocess.PIPE))
    for build in builds:
        _, errors = build.communicate(timeout=120)
        assert build.returncode == 0, errors.decode(errors="replace")[-2000:]
    built = {version: out / f"storegate-{version}-py3-none-any.whl" for version in (V1, V2)}
    return {**built, V3: _broken_copy(built[V2], V3)}


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[TlsBroker]:
    with running_tls_broker(tmp_path, (STORE_A,)) as broker:
        yield broker


def agent_at(home: Path, tls: TlsBroker, listener_port: int) -> Service:
    """The gateway's agent on its home, as the unit runs it; its readings numbered 1, 2, 3, ..."""
    bundle = tls.bundles[STORE_A]
    config: dict[str, Any] = {
        "store_id": STORE_A.store_id,
        "gateway_id": STORE_A.gateway_id,
        "mqtt": {
            "host": HOST,
            "port": tls.port,
            "tls": True,
            "ca_file": str(bundle / "ca.crt"),
            "cert_file": str(bundle / "gateway.crt"),
            "key_file": str(bundle / "gateway.key"),
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
        },
        "outbox": {"path": str(home / "outbox.sqlite")},
        "health": {"interval_s": 2},
        "snapshots": {"hub_url": f"https://{HOST}:{listener_port}"},
        "devices": [
            {
                "device_id": "door-1",
                "driver": "simulated-sequence",
                "kind": "security.door",
                "count": 1_000_000,
                "rate_per_s": 50,
            },
        ],
    }
    write_private(home / "agent.toml", tomli_w.dumps(config))
    argv = [sys.executable, "-m", "launcher", "agent", "--config", str(home / "agent.toml")]
    return Service("agent", argv, home.parent / "agent.log")


async def numbers_at_hub(hub: RunningHub) -> list[int]:
    """The reading numbers of door-1 the hub stored, in order."""
    async with hub.runtime.sessions() as session:
        rows = (await session.execute(select(StoredEvent.kind, StoredEvent.payload))).all()
    return sorted(reading_number(kind, payload) for kind, payload in rows)


async def all_once_beyond(hub: RunningHub, beyond: int) -> bool:
    """Every reading 1..n stored exactly once, and n past ``beyond`` (the readings go on flowing)."""
    numbers = await numbers_at_hub(hub)
    return bool(numbers) and numbers[-1] > beyond and numbers == list(range(1, numbers[-1] + 1))


async def agent_version(hub: RunningHub) -> str | None:
    async with hub.runtime.sessions() as session:
        row = await session.get(Gateway, (STORE_A.store_id, STORE_A.gateway_id))
        return None if row is None else row.agent_version


async def rollout_of(hub: RunningHub, version: str) -> dict[str, Any]:
    """Start a rollout of ``version`` to every gateway and wait until it ends; its final state."""
    body = {"version": version, "stores": "all", "stages": {"sizes": [1]}, "probation_s": 30}
    created = await hub.client.post("/api/v1/rollouts", json=body)
    assert created.status_code == 201, created.text
    url = f"/api/v1/rollouts/{created.json()['rollout_id']}"

    async def ended() -> dict[str, Any] | None:
        state: dict[str, Any] = (await hub.client.get(url)).json()
        return state if state["status"] in {"done", "halted"} else None

    finished = await eventually(ended, what=f"the rollout of {version} to end", timeout=60)
    assert finished is not None
    return finished


async def test_an_agent_is_updated_through_the_hub_and_a_broken_release_rolls_back_by_itself(
    wheels: dict[str, Path], tls: TlsBroker, tmp_path: Path
) -> None:
    listener_port = free_port(HOST)
    settings = load_hub_settings(
        None,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}",
        mqtt=tls.hub_settings(),
        client_id="storegate-hub",
        secrets_dir=tmp_path / "secrets",  # where the TLS broker's CA is: the listener trusts its gateways
        snapshots={
            "listen_host": HOST,
            "listen_port": listener_port,
            "tls_certfile": tls.ca.broker_cert_path,
            "tls_keyfile": tls.ca.broker_key_path,
            "directory": tmp_path / "stills",
        },
        releases={"directory": tmp_path / "hub-releases", "poll_s": 0.2},
    )
    # The gateway as installed: release 1 beside the installation (this checkout), and `current` naming it.
    home = tmp_path / "gateway-home"
    home.mkdir()
    install_wheel(home, V1, wheels[V1].read_bytes())
    switch_current(home, V1)
    agent = agent_at(home, tls, listener_port)
    async with running_hub(settings) as hub:
        async with hub.runtime.sessions() as session:
            await registry.enrol(session, STORE_A.store_id, STORE_A.gateway_id, by="tests", now=wire.utc_now())
            await session.commit()
        for version in (V2, V3):
            uploaded = await hub.client.post("/api/v1/releases", content=wheels[version].read_bytes(), headers=WHEEL)
            assert uploaded.status_code == 201, uploaded.text
        agent.start()
        try:

            async def on(version: str) -> bool:
                return await agent_version(hub) == version

            await eventually(lambda: on(V1), what="release 1 running and known to the hub", timeout=30)
            await eventually(lambda: all_once_beyond(hub, 20), what="release 1's readings at the hub", timeout=30)

            updated = await rollout_of(hub, V2)
            assert updated["status"] == "done", updated
            [target] = updated["targets"]
            assert target["outcome"] == "done"
            assert target["detail"].startswith(f"updated from {V1} to {V2}: it reached the hub and its 1 device(s)")
            assert current_release(home) == V2
            await eventually(lambda: on(V2), what="release 2 known to the hub", timeout=30)
            before = (await numbers_at_hub(hub))[-1]
            await eventually(lambda: all_once_beyond(hub, before + 20), what="readings 1..n once each", timeout=30)

            broken = await rollout_of(hub, V3)
            assert broken["status"] == "halted", broken
            assert "1 gateway(s) failed to update, more than the 0 allowed" in broken["reason"]
            [target] = broken["targets"]
            assert target["outcome"] == "failed"
            assert target["detail"] == (
                f"rolled back from {V3} to {V2}: it exited with code 1 during its probation: "
                "RuntimeError: release 3 is broken"
            )
            assert current_release(home) == V2
            assert await agent_version(hub) == V2
            before = (await numbers_at_hub(hub))[-1]
            await eventually(lambda: all_once_beyond(hub, before + 20), what="readings after the rollback", timeout=30)
        except BaseException:
            print(agent.log_tail(80))
            raise
        finally:
            assert agent.stop() == 0, agent.log_tail(80)
