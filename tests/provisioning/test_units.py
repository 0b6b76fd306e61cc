"""The systemd units as shipped: rendered, then checked by systemd's own `systemd-analyze` (Debian's systemd 252).

`verify` loads a unit file without systemd running as PID 1; it needs the ExecStart binary to exist (the venv's
`storegate` here) and says "Unknown key name", "Failed to parse" and the like on stderr while still exiting 0, so
a unit passes only with exit 0 *and* nothing said. `security --offline=yes` scores the sandbox's exposure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioning.units import AGENT_UNIT, HUB_UNIT, UnitName, UnitPaths, render_unit

STOREGATE = Path(sys.executable).parent / "storegate"
# Both units score 1.5-1.8 ("OK") today; above 2.5 a change has opened the sandbox noticeably. systemd-analyze's
# --threshold counts tenths (0-100).
MAX_EXPOSURE_TENTHS = 25


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd")
    return found


def write_unit(tmp_path: Path, name: UnitName, text: str) -> Path:
    path = tmp_path / "units" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def verify(unit: Path) -> str:
    """What `systemd-analyze verify` finds wrong with ``unit``: empty when it passes."""
    done = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=30, check=False
    )
    said = (done.stdout + done.stderr).strip()
    return said or ("" if done.returncode == 0 else f"exit {done.returncode}")


def rendered(name: UnitName, home: Path) -> str:
    assert STOREGATE.exists(), "the venv's storegate command (pip install -e .)"
    return render_unit(name, UnitPaths(executable=STOREGATE, home=home, config=home / "hub.toml"))


def service_keys(text: str) -> dict[str, list[str]]:
    """The [Service] section's keys, each with its values (a key may repeat)."""
    keys: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


@pytest.mark.parametrize("name", [AGENT_UNIT, HUB_UNIT])
def test_the_unit_passes_systemd_analyze_verify_and_is_hardened(tmp_path: Path, name: UnitName) -> None:
    home = tmp_path / "var-lib-storegate"
    text = rendered(name, home)
    assert not re.search(r"@[A-Z]+@", text), "every placeholder filled in"
    unit = write_unit(tmp_path, name, text)
    assert verify(unit) == ""

    keys = service_keys(text)
    assert keys["User"] == ["storegate"]
    assert keys["ExecStart"][0].startswith(f"{STOREGATE} ")
    assert keys["ProtectSystem"] == ["strict"]
    assert keys["ReadWritePaths"] == [str(home)], "write access to the data directory only"
    assert keys["Restart"] == ["on-failure"]
    assert keys["RestartPreventExitStatus"] == ["2"], "a config error is not restarted"
    for key, value in {
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "UMask": "0077",
        "SystemCallArchitectures": "native",
        "RestrictNamespaces": "yes",
    }.items():
        assert keys.get(key) == [value], key
    assert "@system-service" in keys["SystemCallFilter"]

    exposed, scoring = exposure_within_bounds(unit)
    assert exposed, scoring


def exposure_within_bounds(unit: Path) -> tuple[bool, str]:
    """Whether `systemd-analyze security` scores ``unit`` at most MAX_EXPOSURE_TENTHS, and its last words."""
    scored = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", "--man=no", f"--threshold={MAX_EXPOSURE_TENTHS}", str(unit)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return scored.returncode == 0, scored.stdout[-200:] + scored.stderr


def test_a_unit_without_its_sandbox_fails_the_exposure_check(tmp_path: Path) -> None:
    text = rendered(HUB_UNIT, tmp_path / "home")
    weakened = "\n".join(
        line
        for line in text.splitlines()
        if not line.startswith(("SystemCallFilter=", "CapabilityBoundingSet=", "ProtectProc=", "PrivateDevices="))
    )
    unit = write_unit(tmp_path, HUB_UNIT, weakened)
    assert verify(unit) == "", "still a valid unit"
    exposed, scoring = exposure_within_bounds(unit)
    assert not exposed, scoring


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("ProtectSystem=strict", "ProtectSytem=strict"), "Unknown key 'ProtectSytem'"),
        (("ProtectSystem=strict", "ProtectSystem=sometimes"), "Failed to parse protect system value"),
        (("Restart=on-failure", "Restart=on-failure-please"), "Failed to parse service restart specifier"),
        ((f"ExecStart={STOREGATE}", "ExecStart=/nonexistent/storegate"), "is not executable"),
    ],
    ids=["misspelt-key", "bad-value", "bad-restart", "missing-command"],
)
def test_a_broken_unit_fails_the_same_check(tmp_path: Path, change: tuple[str, str], complaint: str) -> None:
    text = rendered(AGENT_UNIT, tmp_path / "home")
    old, new = change
    assert old in text
    assert complaint in verify(write_unit(tmp_path, AGENT_UNIT, text.replace(old, new, 1)))


@pytest.mark.parametrize(
    ("paths", "refusal"),
    [
        (UnitPaths(executable=Path("bin/storegate"), home=Path("/var/lib/storegate")), "must be an absolute path"),
        (UnitPaths(executable=STOREGATE, home=Path("/var/lib/store gate")), "holds a space"),
        (UnitPaths(executable=STOREGATE, home=Path("/var/lib/sg\nExecStartPre=/bin/sh")), "control character"),
        (UnitPaths(executable=STOREGATE, home=Path("/var/lib/storegate"), user="root\nUser=x"), "not a system user"),
    ],
    ids=["relative", "space", "newline-injection", "bad-user"],
)
def test_render_refuses_values_that_would_change_the_unit(paths: UnitPaths, refusal: str) -> None:
    with pytest.raises(ValueError, match=refusal):
        render_unit(AGENT_UNIT, paths)


def test_percent_signs_are_escaped_from_systemd_specifiers(tmp_path: Path) -> None:
    home = tmp_path / "50%h"
    text = render_unit(AGENT_UNIT, UnitPaths(executable=STOREGATE, home=home))
    assert f"ReadWritePaths={tmp_path}/50%%h" in text
    assert verify(write_unit(tmp_path, AGENT_UNIT, text)) == ""


def test_the_hub_unit_needs_its_config_and_reads_an_optional_environment_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"hub\.toml"):
        render_unit(HUB_UNIT, UnitPaths(executable=STOREGATE, home=tmp_path))
    text = render_unit(HUB_UNIT, UnitPaths(executable=STOREGATE, home=tmp_path, config=Path("/etc/sg/hub.toml")))
    assert service_keys(text)["EnvironmentFile"] == ["-/etc/sg/hub.env"]
