"""Which release of the agent runs, and the watch over a new one: the stable launcher's part of updates.

``storegate agent`` (started by the systemd unit) calls :func:`run_agent_releases` before anything of the agent is
imported. This is the installation's own code, the one that never changes with an update, so it can watch a new
release that crashes at import:

- no ``<home>/current``, or it names the installation's own version: the agent runs in this process, as always.
  When it ends with :data:`~edge_agent.updates.EXIT_SWITCH` (it installed a release and switched ``current``), the
  launcher goes on to run that release;
- ``current`` names another release: it runs as a child process, ``python -m launcher agent`` with the release's
  ``lib`` first on ``sys.path`` (``PYTHONPATH``) and :data:`~edge_agent.updates.RELEASE_ENV` set, so the child
  runs the release's code and does not supervise again. Signals are passed on to it; its exit code is the
  launcher's;
- while the update record (:mod:`edge_agent.updates`) says the release is on probation, the launcher watches it:
  if the child ends, or the probation passes without the agent confirming it reached the hub and its devices, the
  launcher stops it, points ``current`` back at the release before, records "rolled back from X to Y: why", and
  runs that release, which reports the outcome to the hub.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO, Final

import structlog

from edge_agent.updates import (
    EXIT_SWITCH,
    RELEASE_ENV,
    Outcome,
    UpdateRecord,
    current_release,
    read_record,
    release_lib,
    switch_current,
    update_home,
    write_record,
)

log = structlog.get_logger(__name__)

WATCH_INTERVAL_S: Final = 0.2
STOP_GRACE_S: Final = 30.0
# Lines of a failed release's stderr kept for the reason of its rollback.
STDERR_LINES: Final = 5


def run_agent_releases(config_path: Path, run_in_process: Callable[[], int], *, own_version: str) -> int:
    """Run the agent of ``config_path``: this installation's code in-process, or the release ``current`` names."""
    if os.environ.get(RELEASE_ENV):
        return run_in_process()  # a release the launcher started: it runs, the launcher above it watches
    home = update_home(config_path)
    while True:
        release = current_release(home)
        if release is None or release == own_version:
            code = run_in_process()
            if code != EXIT_SWITCH:
                return code
            continue
        ended = _run_release(home, config_path, release)
        if ended is None or ended == EXIT_SWITCH:  # rolled back, or switched again: run what current names now
            continue
        return ended


def _probation(home: Path, release: str) -> UpdateRecord | None:
    """The record of ``release``'s probation, started now if it was switching; None when it is not on probation."""
    record = read_record(home)
    if record is None or record.to_version != release or record.state not in {"switching", "probation"}:
        return None
    # A fresh probation at each start: a gateway restarted mid-probation (a power cut) gives the release its full
    # time again; a release that crashes is caught by its exit, whenever it comes.
    record = record.model_copy(update={"state": "probation", "probation_started": time.time()})
    write_record(home, record)
    log.info("update_probation", version=release, probation_s=record.probation_s)
    return record


def roll_back(home: Path, record: UpdateRecord, why: str) -> None:
    """Point ``current`` back at the release before and record the failed outcome, saying why."""
    detail = f"rolled back from {record.to_version} to {record.from_version}: {why}"
    switch_current(home, record.from_release)
    write_record(
        home,
        record.model_copy(
            update={
                "state": "rolled_back",
                "outcome": Outcome(status="failed", detail=detail[:2000]),
                "reported": False,
            }
        ),
    )
    log.error("update_rolled_back", version=record.to_version, to=record.from_version, why=why)


def _child_command(config_path: Path) -> list[str]:
    # -P: the working directory is not put first on sys.path, so the release's lib is what `launcher` imports.
    return [sys.executable, "-P", "-m", "launcher", "agent", "--config", str(config_path)]


def _child_environment(home: Path, release: str) -> dict[str, str]:
    env = dict(os.environ)
    lib = str(release_lib(home, release))
    env["PYTHONPATH"] = lib + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env[RELEASE_ENV] = release
    return env


def _copy_stderr(stream: IO[bytes], last: collections.deque[str]) -> None:
    """Pass the child's stderr on (to the journal) and keep its last lines for a rollback's reason."""
    for line in iter(stream.readline, b""):
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()
        text = line.decode("utf-8", "replace").strip()
        if text:
            last.append(text[:300])


def _run_release(home: Path, config_path: Path, release: str) -> int | None:
    """Run ``release`` as a child until it ends; its exit code, or None when it was rolled back."""
    record = _probation(home, release)
    last_lines: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
    log.info("release_starting", version=release, lib=str(release_lib(home, release)))
    child = subprocess.Popen(_child_command(config_path), env=_child_environment(home, release), stderr=subprocess.PIPE)
    assert child.stderr is not None
    copier = threading.Thread(target=_copy_stderr, args=(child.stderr, last_lines), daemon=True)
    copier.start()
    stopping = threading.Event()

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                code = child.wait(timeout=WATCH_INTERVAL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if record is None or stopping.is_set():
                continue
            now_record = read_record(home)
            if now_record is None or now_record.state != "probation":
                record = None  # confirmed by the agent: no more watching
                continue
            started = now_record.probation_started or time.time()
            if time.time() - started >= now_record.probation_s:
                _stop(child)
                copier.join(timeout=5)
                roll_back(
                    home,
                    now_record,
                    f"it did not reach the hub and its devices within its probation of {now_record.probation_s} s",
                )
                return None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    copier.join(timeout=5)
    if record is not None and not stopping.is_set():
        now_record = read_record(home)
        if now_record is not None and now_record.state == "probation":
            said = f": {last_lines[-1]}" if last_lines else ""
            roll_back(home, now_record, f"it exited with code {code} during its probation{said}")
            return None
    return code


def _stop(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after the grace the unit gives (TimeoutStopSec)."""
    child.terminate()
    try:
        child.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
