"""``storegate provision agent-config`` with TLS and a password file, and ``provision check`` on a bad TLS setup.

Certificates are made for each test with the openssl command line: a hub CA, a gateway's client
certificate from it, a key of another pair, and a certificate from a CA the hub does not use.
The command runs as the technician runs it, in a process of its own, under a umask of 022.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.config import load_agent_config
from launcher.broker import LocalBroker, find_mosquitto, free_port, start_mosquitto_with
from storegate.private_files import is_private
from tests.conftest import eventually

PASSWORD = "gw-3 broker password"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Pki:
    """Files of a small PKI in one directory."""

    ca: Path
    cert: Path
    key: Path
    other_key: Path
    foreign_cert: Path
    foreign_key: Path


def _ca(name: str, where: Path) -> tuple[Path, Path]:
    key, cert = where / f"{name}.key", where / f"{name}.pem"
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key.name, "-out", cert.name, "-days", "2", "-subj", f"/CN={name}", cwd=where,
    )  # fmt: skip
    return cert, key


def _client(name: str, ca: tuple[Path, Path], where: Path) -> tuple[Path, Path]:
    key, cert, csr = where / f"{name}.key", where / f"{name}.pem", where / f"{name}.csr"
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key.name, "-out", csr.name, "-subj", f"/CN={name}", cwd=where,
    )  # fmt: skip
    extensions = where / f"{name}.ext"
    extensions.write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    openssl(
        "x509", "-req", "-in", csr.name, "-CA", ca[0].name, "-CAkey", ca[1].name, "-CAcreateserial",
        "-out", cert.name, "-days", "2", "-extfile", extensions.name, cwd=where,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    where = tmp_path / "pki"
    where.mkdir()
    hub_ca = _ca("hub-ca", where)
    cert, key = _client("store-0042-gw-3", hub_ca, where)
    _, other_key = _client("store-0042-gw-4", hub_ca, where)
    foreign_cert, foreign_key = _client("elsewhere", _ca("other-ca", where), where)
    return Pki(
        ca=hub_ca[0], cert=cert, key=key, other_key=other_key, foreign_cert=foreign_cert, foreign_key=foreign_key
    )


def storegate(*args: str) -> subprocess.CompletedProcess[str]:
    """The storegate command in a process of its own, with a umask that would leave new files readable."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; os.umask(0o022); from launcher.cli import run; sys.argv[0] = 'storegate'; run()",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def provision(output: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return storegate(
        "provision", "agent-config", "--store-id", "store-0042", "--gateway-id", "gw-3",
        "--broker-host", "hub.example.net", "--broker-port", "8883", "--username", "store-0042-gw-3",
        "--output", str(output), *options,
    )  # fmt: skip


def password_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "mqtt-password"
    path.write_text(PASSWORD + "\n")
    path.chmod(mode)
    return path


def test_tls_and_password_file_are_checked_and_written_into_a_private_config(tmp_path: Path, pki: Pki) -> None:
    output = tmp_path / "gw" / "agent.toml"
    secret = password_file(tmp_path)
    result = provision(
        output, "--tls-ca", str(pki.ca), "--tls-cert", str(pki.cert), "--tls-key", str(pki.key),
        "--password-file", str(secret),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert is_private(output), f"agent.toml is {output.stat().st_mode & 0o777:04o}"
    assert PASSWORD not in output.read_text()
    config = load_agent_config(output, environ={})
    mqtt = config.mqtt
    assert (mqtt.tls, mqtt.ca_file, mqtt.cert_file, mqtt.key_file) == (True, pki.ca, pki.cert, pki.key)
    assert mqtt.password_file == secret
    password = mqtt.broker_password()
    assert password is not None
    assert password.get_secret_value() == PASSWORD

    check = storegate("provision", "check", "--config", str(output))
    assert check.returncode == 0, check.stderr
    assert "valid for store store-0042" in check.stdout


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (
            "--tls-ca {ca} --tls-cert {cert} --tls-key {other_key}",
            "do not belong together: {other_key} is not the key of {cert}",
        ),
        (
            "--tls-ca {ca} --tls-cert {foreign_cert} --tls-key {foreign_key}",
            "is not accepted by the CA in {ca} (unable to get local issuer certificate)",
        ),
        ("--tls-ca {ca} --tls-cert {cert} --tls-key {key}.missing", "mqtt.key_file: {key}.missing not found"),
        ("--tls-ca {key} --tls-cert {cert} --tls-key {key}", "mqtt.ca_file: {key} holds no usable CA certificate"),
        ("--tls-ca {ca} --tls-cert {cert}", "mqtt.cert_file and mqtt.key_file go together"),
    ],
    ids=["key-of-another-pair", "signed-by-another-ca", "missing-key", "ca-is-not-a-certificate", "cert-without-key"],
)
def test_a_bad_tls_setup_is_refused_in_words_and_nothing_is_written(
    tmp_path: Path, pki: Pki, options: str, says: str
) -> None:
    output = tmp_path / "agent.toml"
    files = asdict(pki)
    result = provision(output, *options.format(**files).split())
    assert result.returncode == 2
    assert says.format(**files) in result.stderr, result.stderr
    assert not output.exists()


def test_a_readable_key_or_password_file_is_refused_with_the_fix(tmp_path: Path, pki: Pki) -> None:
    output = tmp_path / "agent.toml"
    pki.key.chmod(0o644)
    result = provision(output, "--tls-ca", str(pki.ca), "--tls-cert", str(pki.cert), "--tls-key", str(pki.key))
    assert result.returncode == 2
    assert f"mode 0644); it must be private to its owner: chmod 600 {pki.key}" in result.stderr
    assert not output.exists()

    pki.key.chmod(0o600)
    secret = password_file(tmp_path, 0o640)
    result = provision(output, "--password-file", str(secret))
    assert result.returncode == 2
    assert f"chmod 600 {secret}" in result.stderr
    assert PASSWORD not in result.stderr
    assert not output.exists()


def test_check_reports_a_tls_setup_that_went_bad_after_provisioning(tmp_path: Path, pki: Pki) -> None:
    output = tmp_path / "agent.toml"
    result = provision(output, "--tls-ca", str(pki.ca), "--tls-cert", str(pki.cert), "--tls-key", str(pki.key))
    assert result.returncode == 0, result.stderr

    # Someone replaces the key with another pair's (a botched renewal).
    pki.key.write_bytes(pki.other_key.read_bytes())
    check = storegate("provision", "check", "--config", str(output))
    assert check.returncode == 2
    assert str(output) in check.stderr
    assert f"do not belong together: {pki.key} is not the key of {pki.cert}" in check.stderr

    # And then opens it to everyone.
    pki.key.chmod(0o644)
    check = storegate("provision", "check", "--config", str(output))
    assert check.returncode == 2
    assert f"chmod 600 {pki.key}" in check.stderr

    # A config that names TLS files but leaves TLS off says so.
    pki.key.chmod(0o600)
    text = output.read_text().replace("tls = true", "tls = false")
    output.write_text(text)
    check = storegate("provision", "check", "--config", str(output))
    assert check.returncode == 2
    assert "mqtt.tls is false, so mqtt.ca_file, mqtt.cert_file, mqtt.key_file would not be used" in check.stderr


def _server(ca: Path, ca_key: Path, where: Path) -> tuple[Path, Path]:
    """The broker's certificate for 127.0.0.1 from the hub CA."""
    key, cert, csr = where / "broker.key", where / "broker.pem", where / "broker.csr"
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key.name, "-out", csr.name, "-subj", "/CN=127.0.0.1", cwd=where,
    )  # fmt: skip
    extensions = where / "broker.ext"
    extensions.write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509", "-req", "-in", csr.name, "-CA", ca.name, "-CAkey", ca_key.name, "-CAcreateserial",
        "-out", cert.name, "-days", "2", "-extfile", extensions.name, cwd=where,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[LocalBroker]:
    """A real Mosquitto that takes only clients with a certificate from the hub CA, over TLS."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: apt-get install mosquitto")
    cert, key = _server(pki.ca, pki.ca.with_suffix(".key"), pki.ca.parent)
    workdir = tmp_path / "tls-broker"
    workdir.mkdir()
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(
        "\n".join(
            [
                f"listener {port} 127.0.0.1",
                f"cafile {pki.ca}",
                f"certfile {cert}",
                f"keyfile {key}",
                "require_certificate true",
                "use_identity_as_username true",
                "allow_anonymous false",
                "persistence false",
                "log_dest stderr",
                # As root Mosquitto would drop to the mosquitto user, who may not read these 0600 files.
                *(["user root"] if os.geteuid() == 0 else []),
            ]
        )
        + "\n"
    )
    broker = start_mosquitto_with(config, host="127.0.0.1", port=port)
    try:
        yield broker
    finally:
        broker.stop(kill=True)


async def test_a_provisioned_agent_connects_over_tls_with_its_certificate(
    tmp_path: Path, pki: Pki, tls_broker: LocalBroker
) -> None:
    output = tmp_path / "gw" / "agent.toml"
    result = storegate(
        "provision", "agent-config", "--store-id", "store-0042", "--gateway-id", "gw-3",
        "--broker-host", tls_broker.host, "--broker-port", str(tls_broker.port),
        "--tls-ca", str(pki.ca), "--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--output", str(output),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = load_agent_config(output, environ={})
    agent = EdgeAgent(
        config=config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"reconnect_min_s": 0.2})})
    )
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:

        async def connected() -> bool:
            return agent.stats.connected

        await eventually(connected, what="the agent connected over TLS with its certificate")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)
