"""The gateway's side of updates without a hub: installing beside, switching, and the stable launcher's watch.

The launcher runs real child processes here: tiny "releases" whose ``launcher`` package crashes at import, hangs
without ever confirming, or confirms its probation, so the watch is tested as it runs on a gateway. The whole path
with built wheels, a hub and a broker is tests/end_to_end/test_update_end_to_end.py.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edge_agent.updates import (
    EXIT_SWITCH,
    RELEASE_ENV,
    UpdateArgs,
    UpdateRecord,
    current_release,
    install_wheel,
    read_record,
    record_path,
    release_lib,
    switch_current,
    write_record,
)
from launcher.releases import run_agent_releases
from storegate.wheels import WheelError
from tests.hub.releases.wheels import fake_wheel

OWN = "0.1.0"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "home"
    root.mkdir()
    (root / "agent.toml").write_text("# not read: the releases here are stand-ins\n")
    monkeypatch.setenv("STOREGATE_AGENT_HOME", str(root))
    monkeypatch.delenv(RELEASE_ENV, raising=False)
    return root


def fake_release(home: Path, version: str, main: str) -> None:
    """A release whose ``python -m launcher`` runs ``main``."""
    lib = release_lib(home, version) / "launcher"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text("")
    (lib / "__main__.py").write_text(main)


def switching_to(home: Path, version: str, *, probation_s: int = 30, from_release: str | None = None) -> None:
    """What the running agent leaves when it has installed ``version`` and switched to it."""
    write_record(
        home,
        UpdateRecord(
            command_id="6f1c1f8e-0000-4000-8000-000000000001",
            from_version=from_release or OWN,
            from_release=from_release,
            to_version=version,
            probation_s=probation_s,
            state="switching",
        ),
    )
    switch_current(home, version)


class InProcess:
    """The installation's own agent: counts its runs, answers ``codes`` in turn."""

    def __init__(self, *codes: int) -> None:
        self.codes = list(codes)
        self.runs = 0

    def __call__(self) -> int:
        self.runs += 1
        return self.codes.pop(0)


def test_a_release_unpacks_beside_the_running_one_and_current_names_it(home: Path) -> None:
    lib = install_wheel(home, "0.2.0", fake_wheel("0.2.0", members={"storegate/__init__.py": b"X = 2\n"}))
    assert (lib / "storegate" / "__init__.py").read_text() == "X = 2\n"
    assert (lib / "storegate-0.2.0.dist-info" / "METADATA").is_file()
    assert current_release(home) is None
    switch_current(home, "0.2.0")
    assert current_release(home) == "0.2.0"
    assert os.readlink(home / "current") == "releases/0.2.0"
    switch_current(home, None)
    assert current_release(home) is None


def test_a_forged_member_is_never_unpacked(home: Path) -> None:
    with pytest.raises(WheelError, match="unsafe member"):
        install_wheel(home, "0.2.0", fake_wheel("0.2.0", members={"../escaped.py": b"boom"}))
    assert not (home / "releases" / "escaped.py").exists()
    assert not (home / "escaped.py").exists()


def test_the_update_record_is_private(home: Path) -> None:
    switching_to(home, "0.2.0")
    assert stat.S_IMODE(record_path(home).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "args",
    [
        {"version": "0.2.0", "sha256": "0" * 64, "download_path": "http://evil.example/x.whl", "probation_s": 60},
        {
            "version": "../..",
            "sha256": "0" * 64,
            "download_path": "/api/v1/gateway/releases/x/wheel",
            "probation_s": 60,
        },
        {"version": "0.2.0", "sha256": "XYZ", "download_path": "/api/v1/gateway/releases/x/wheel", "probation_s": 60},
        {"version": "0.2.0", "sha256": "0" * 64, "download_path": "/api/v1/gateway/releases/x/wheel", "probation_s": 1},
    ],
)
def test_forged_update_arguments_are_refused(args: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="validation error"):
        UpdateArgs.model_validate(args)


def test_without_a_release_the_installation_runs_in_process(home: Path) -> None:
    agent = InProcess(0)
    assert run_agent_releases(home / "agent.toml", agent, own_version=OWN) == 0
    assert agent.runs == 1


def test_a_release_that_crashes_at_import_is_rolled_back_by_the_launcher(home: Path) -> None:
    fake_release(home, "0.2.0", "raise RuntimeError('this release is broken')\n")
    # The installation's agent installs 0.2.0 and ends to switch; after the rollback it runs again and stops.
    agent = InProcess(EXIT_SWITCH, 0)
    original = agent.__call__

    def installs_then_runs() -> int:
        if agent.runs == 0:
            switching_to(home, "0.2.0")
        return original()

    assert run_agent_releases(home / "agent.toml", installs_then_runs, own_version=OWN) == 0
    assert agent.runs == 2
    assert current_release(home) is None  # back on the installation's own code
    record = read_record(home)
    assert record is not None
    assert record.state == "rolled_back"
    assert record.outcome is not None
    assert record.outcome.status == "failed"
    assert record.outcome.detail.startswith(
        "rolled back from 0.2.0 to 0.1.0: it exited with code 1 during its probation"
    )
    assert "RuntimeError: this release is broken" in record.outcome.detail
    assert not record.reported  # the agent that runs next reports it


def test_a_release_that_never_confirms_is_stopped_and_rolled_back_after_its_probation(home: Path) -> None:
    fake_release(home, "0.1.5", "")
    fake_release(home, "0.2.0", "import time\nwhile True:\n    time.sleep(1)\n")  # up, but never reaches the hub
    switch_current(home, "0.1.5")
    # 0.1.5 runs as a child too: after the rollback the launcher runs it again (it ends at once: code 0).
    switching_to(home, "0.2.0", probation_s=1, from_release="0.1.5")
    assert run_agent_releases(home / "agent.toml", InProcess(), own_version=OWN) == 0
    assert current_release(home) == "0.1.5"
    record = read_record(home)
    assert record is not None
    assert record.outcome is not None
    assert record.outcome.detail == (
        "rolled back from 0.2.0 to 0.1.5: it did not reach the hub and its devices within its probation of 1 s"
    )


# The new agent's part, with the standard library only (the real one is edge_agent.updates.Updater._confirm).
CONFIRMS = """
import json, os, pathlib
path = pathlib.Path(os.environ["STOREGATE_AGENT_HOME"]) / "update.json"
record = json.loads(path.read_text())
assert record["state"] == "probation" and os.environ["STOREGATE_RELEASE"] == "0.2.0", record
record.update(state="confirmed", outcome={"status": "done", "detail": "ok"})
path.write_text(json.dumps(record))
"""


def test_a_release_that_confirms_its_probation_keeps_running(home: Path) -> None:
    fake_release(home, "0.2.0", CONFIRMS)
    switching_to(home, "0.2.0", probation_s=60)
    assert run_agent_releases(home / "agent.toml", InProcess(), own_version=OWN) == 0
    assert current_release(home) == "0.2.0"
    record = read_record(home)
    assert record is not None
    assert record.state == "confirmed"
