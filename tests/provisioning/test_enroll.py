"""``storegate provision enroll`` and ``bundle``: a gateway enrols itself against a real hub served on loopback.

Real parts: the hub (uvicorn on loopback, its CA, its database), the openssl command making the gateway's key, the
files in a gateway home in tmp_path, systemd-analyze checking the first-boot unit. systemd is not PID 1 here: the
systemctl calls are recorded at the lowest layer (the ``run`` seam), and the end-to-end test runs a systemctl shim.
An impostor hub (an attacker between the gateway and the hub) is played by an httpx transport.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from edge_agent.config import load_agent_config
from hub.pki.authority import CertificateAuthority
from hub.pki.commands import pki_directory
from hub.pki.identity import GatewayIdentity
from hub.settings import HubSettings, load_hub_settings
from launcher.broker import free_port
from launcher.cli import app as cli_app
from provisioning.bundle import ENROLMENT_FILE_NAME, qr_code, write_bundle
from provisioning.enroll import EnrolOptions, EnrolRefusedError, check_hub_url, enroll
from provisioning.layout import GatewayHome
from provisioning.units import AGENT_UNIT, FIRSTBOOT_UNIT
from storegate.enrolment import parse_token
from storegate.mqtt import MqttSettings
from storegate.private_files import is_private
from tests.hub.auth.test_sessions import served
from tests.hub.conftest import token_in_database

STORE, GATEWAY = "store-0001", "gw-1"
# This installation's storegate command (beside the interpreter: a venv's bin/ need not be on PATH).
STOREGATE = Path(sys.executable).with_name("storegate")


async def new_token(client: httpx.AsyncClient, admin: str, gateway_id: str = GATEWAY) -> str:
    answer = await client.post(
        "/api/v1/enrolment-tokens",
        json={"store_id": STORE, "gateway_id": gateway_id},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["token"]
    return token


@pytest.fixture
async def hub(mqtt_settings: MqttSettings, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, str, HubSettings]]:
    """A hub with a CA, served on loopback; its client, an admin token, its settings."""
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}"
    settings = load_hub_settings(
        None,
        database_url=sqlite_url,
        mqtt=mqtt_settings,
        http_port=free_port(),
        secrets_dir=tmp_path / "secrets",
        enrolment={"broker_host": "broker.store.example", "broker_port": 8883},
    )
    CertificateAuthority.create(pki_directory(settings))
    admin = await token_in_database(sqlite_url)
    async with served(settings) as client:
        yield client, admin, settings


def options(tmp_path: Path, hub_url: str, token: str, **more: object) -> EnrolOptions:
    given: dict[str, object] = {
        "home": GatewayHome(tmp_path / "gateway"),
        "unit_dir": tmp_path / "units",
        "executable": STOREGATE,
        "systemd_runtime_dir": tmp_path / "no-systemd",
        **more,
    }
    return EnrolOptions(hub_url=hub_url, token=token, **given)  # type: ignore[arg-type]


async def test_enroll_writes_the_home_and_the_unit_and_starts_the_agent_where_systemd_runs(
    hub: tuple[httpx.AsyncClient, str, HubSettings], tmp_path: Path
) -> None:
    client, admin, settings = hub
    hub_url = str(client.base_url).rstrip("/")
    token = await new_token(client, admin)

    # Where systemd runs, the agent's account must exist first (the token is not spent on a unit that cannot start).
    (tmp_path / "systemd").mkdir()
    with pytest.raises(EnrolRefusedError, match="the account 'no-such-account' the agent runs as does not exist"):
        await asyncio.to_thread(
            enroll, options(tmp_path, hub_url, token, systemd_runtime_dir=tmp_path / "systemd", user="no-such-account")
        )
    # Then: daemon-reload, enable --now (recorded: systemd is not PID 1 here).
    calls: list[list[str]] = []
    done = await asyncio.to_thread(
        enroll,
        options(tmp_path, hub_url, token, systemd_runtime_dir=tmp_path / "systemd", user=getpass.getuser()),
        run=calls.append,
    )
    assert calls == [["daemon-reload"], ["enable", "--now", AGENT_UNIT]]
    assert done.started
    home = GatewayHome(tmp_path / "gateway")
    assert is_private(home.key_file)
    assert is_private(home.config)
    config = load_agent_config(home.config)
    assert (config.store_id, config.gateway_id) == (STORE, GATEWAY)
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("broker.store.example", 8883, True)
    assert config.mqtt.cert_file == home.cert_file
    assert home.ca_file.read_bytes() == CertificateAuthority.open(pki_directory(settings)).ca_cert_path.read_bytes()
    unit = (tmp_path / "units" / AGENT_UNIT).read_text()
    assert f"ExecStart={STOREGATE} agent --config {home.root}/agent.toml" in unit
    assert f"Environment=STOREGATE_AGENT_HOME={home.root}" in unit

    # The same home again: refused without --force; the same token again: the hub says it is spent.
    with pytest.raises(EnrolRefusedError, match="holds a gateway already"):
        await asyncio.to_thread(enroll, options(tmp_path, hub_url, token))
    with pytest.raises(EnrolRefusedError, match=r"refused the enrolment \(403\): .*used already"):
        await asyncio.to_thread(enroll, options(tmp_path, hub_url, token, force=True))

    # First boot, where systemd does not run: the bundle's enrolment file, deleted once the token is spent; no
    # systemd said in words, with the command to start the agent by hand (the CLI, exit 0).
    other = await new_token(client, admin, "gw-2")
    bundle = write_bundle(tmp_path / "boot", hub_url=hub_url, token=other, executable=STOREGATE, home=tmp_path)

    def first_boot() -> tuple[int, str]:
        result = CliRunner().invoke(
            cli_app,
            [
                "provision",
                "enroll",
                "--from-file",
                str(bundle.enrolment_file),
                "--home",
                str(tmp_path / "gw-2"),
                "--unit-dir",
                str(tmp_path / "units-2"),
                "--systemd-runtime-dir",
                str(tmp_path / "no-systemd"),
            ],
        )
        return result.exit_code, result.output

    code, output = await asyncio.to_thread(first_boot)
    assert code == 0, output
    assert "systemd is not running here" in output
    assert f"agent --config {tmp_path / 'gw-2'}/agent.toml" in output
    assert f"removed {bundle.enrolment_file}" in output
    assert not bundle.enrolment_file.exists()
    code, output = await asyncio.to_thread(first_boot)  # the unit's ConditionPathExists stops this on a gateway
    assert code == 2
    assert "is not an enrolment file (FileNotFoundError)" in output


async def test_refusals_are_sentences_and_exit_2_and_an_impostor_hub_gets_nothing_written(
    hub: tuple[httpx.AsyncClient, str, HubSettings], tmp_path: Path
) -> None:
    client, admin, _ = hub
    hub_url = str(client.base_url).rstrip("/")
    token = await new_token(client, admin)
    parsed = parse_token(token)
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli_app, ["provision", "enroll", "--home", str(tmp_path / "gateway"), *args])
        return result.exit_code, result.output

    forged = f"sge1.{parsed.token_id}.{'A' * 43}.{parsed.ca_pin}"
    code, output = await asyncio.to_thread(run, "--hub", hub_url, "--token", forged)
    assert code == 2
    assert "not one the hub made" in output
    code, output = await asyncio.to_thread(run, "--hub", hub_url, "--token", "sge1.123")
    assert (code, "not an enrolment token" in output) == (2, True)
    code, output = await asyncio.to_thread(run, "--hub", "http://hub.example.net", "--token", token)
    assert (code, "plain HTTP" in output) == (2, True)
    code, output = await asyncio.to_thread(run, "--hub", f"http://127.0.0.1:{free_port()}", "--token", token)
    assert (code, "could not be reached" in output) == (1, True)
    assert not (tmp_path / "gateway").exists()

    # An impostor answers with a CA of its own: the pin does not match, and nothing is written.
    impostor_ca = CertificateAuthority.create(tmp_path / "impostor")
    impostor = impostor_ca.issue_gateway(GatewayIdentity(STORE, GATEWAY))

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            201,
            json={
                "store_id": STORE,
                "gateway_id": GATEWAY,
                "certificate_pem": impostor.certificate_pem.decode(),
                "ca_certificate_pem": impostor.ca_pem.decode(),
                "serial": "1",
                "not_after": "2030-01-01T00:00:00Z",
                "broker_host": "evil.example",
                "broker_port": 8883,
                "gateway_listener_url": None,
                "agent_config": {
                    "store_id": STORE,
                    "gateway_id": GATEWAY,
                    "broker_host": "evil.example",
                    "broker_port": 8883,
                    "hub_url": None,
                },
            },
        )

    with pytest.raises(EnrolRefusedError, match="not the one the token pins"):
        enroll(options(tmp_path, "https://hub.example.net", token, transport=httpx.MockTransport(answer)))
    assert not (tmp_path / "gateway").exists()
    assert check_hub_url("https://hub.example.net/") == "https://hub.example.net"


def test_bundle_writes_a_private_enrolment_file_and_a_first_boot_unit_systemd_accepts(tmp_path: Path) -> None:
    token = f"sge1.{'a' * 16}.{'B' * 43}.{'c' * 64}"
    result = CliRunner().invoke(
        cli_app,
        ["provision", "bundle", "--out", str(tmp_path / "boot"), "--hub", "https://hub.example.net", "--token", token],
    )
    assert result.exit_code == 0, result.output
    enrolment_file = tmp_path / "boot" / ENROLMENT_FILE_NAME
    assert is_private(enrolment_file)
    assert json.loads(enrolment_file.read_text()) == {"hub": "https://hub.example.net", "token": token}
    link = f"https://hub.example.net/enrol#{token}"
    assert f"enrolment link: {link}" in result.output
    assert qr_code(link) in result.output
    unit = (tmp_path / "boot" / FIRSTBOOT_UNIT).read_text()
    assert "ConditionPathExists=/boot/firmware/storegate-enrol.json" in unit
    assert "provision enroll --from-file /boot/firmware/storegate-enrol.json" in unit

    # systemd-analyze needs the ExecStart binary to exist: this installation's storegate command.
    bundle = write_bundle(
        tmp_path / "verify", hub_url="https://hub.example.net", token=token, executable=STOREGATE, home=tmp_path
    )
    checked = subprocess.run(
        ["systemd-analyze", "verify", str(bundle.unit_file)], capture_output=True, text=True, check=False
    )
    assert (checked.returncode, checked.stderr) == (0, "")

    refused = CliRunner().invoke(
        cli_app, ["provision", "bundle", "--out", str(tmp_path / "x"), "--hub", "https://h.example", "--token", "x"]
    )
    assert refused.exit_code == 2
    assert "not an enrolment token" in refused.output
