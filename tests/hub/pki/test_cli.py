"""``storegate hub pki ...`` and ``storegate hub broker-config`` as an operator runs them."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509

SERIAL_PREFIX = "revoked store-a/gw-1: "


def storegate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_init_issue_revoke_and_broker_config_keep_the_broker_files_in_step(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    broker = tmp_path / "broker"
    config.write_text(
        f'secrets_dir = "{tmp_path / "secrets"}"\n'
        f'[broker]\nfiles_dir = "{broker}"\nhosts = ["mqtt.example", "192.0.2.7"]\n'
    )
    init = storegate("hub", "pki", "init", "--config", str(config))
    assert init.returncode == 0, init.stderr
    assert "cert_file" in init.stdout
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700

    out = tmp_path / "gw"
    issue = storegate("hub", "--config", str(config), "pki", "issue", "store-a/gw-1", "--out", str(out))
    assert issue.returncode == 0, issue.stderr
    assert stat.S_IMODE((out / "gateway.key").stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in issue.stdout + issue.stderr
    assert "user store-a/gw-1\n" in (broker / "acl").read_text()

    revoke = storegate("hub", "pki", "revoke", "store-a/gw-1", "--config", str(config))
    assert revoke.returncode == 0, revoke.stderr
    serial = int(revoke.stdout.split(SERIAL_PREFIX)[1].split()[0], 16)
    assert "user store-a/gw-1\n" not in (broker / "acl").read_text()
    crl = x509.load_pem_x509_crl((broker / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None

    again = tmp_path / "again"
    written = storegate("hub", "broker-config", "--config", str(config), "--out", str(again))
    assert written.returncode == 0, written.stderr
    assert sorted(p.name for p in again.iterdir()) == [
        "acl",
        "broker.crt",
        "broker.key",
        "ca.crt",
        "crl.pem",
        "mosquitto.conf",
    ]
    assert f"crlfile {again / 'crl.pem'}" in (again / "mosquitto.conf").read_text()


def test_bad_names_and_a_missing_ca_fail_with_a_reason(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'secrets_dir = "{tmp_path / "secrets"}"\n')
    missing = storegate("hub", "pki", "issue", "store-a/gw-1", "--out", str(tmp_path / "x"), "--config", str(config))
    assert missing.returncode == 1
    assert "storegate hub pki init" in missing.stderr
    assert storegate("hub", "pki", "init", "--config", str(config)).returncode == 0
    bad = storegate("hub", "pki", "issue", "store-a/../gw", "--out", str(tmp_path / "x"), "--config", str(config))
    assert bad.returncode == 1
    assert "not a valid topic segment" in bad.stderr
    no_out = storegate("hub", "broker-config", "--config", str(config))
    assert no_out.returncode == 2
    assert "--out" in no_out.stderr
