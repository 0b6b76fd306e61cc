#!/usr/bin/env python3
"""The README's two commands: ``python3 run.py demo`` and ``python3 run.py test``.

Needs only Python 3.11+. On first use (and whenever pyproject.toml changes) it
creates ``.venv`` beside this file and installs Storegate with its development
tools into it; then it replaces itself with the requested program, so Ctrl-C
and exit codes reach you unchanged.

    python3 run.py demo [storegate demo options]   broker, hub, dashboard and a simulated store
    python3 run.py test [pytest options]           ruff (lint, format), mypy, import-linter, then the whole test suite
                                                   (three pytest workers per two cores, up to 4; -n 0 runs it in one)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".storegate-installed"


def _requirements_digest() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_venv() -> None:
    """Create .venv and install the project into it unless it is already up to date."""
    if sys.version_info < (3, 11):  # noqa: UP036 - run.py may be started by an older python3
        sys.exit(f"Storegate needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    digest = _requirements_digest()
    if STAMP.exists() and STAMP.read_text().strip() == digest and (BIN / "storegate").exists():
        return
    if not (BIN / "python").exists():
        print(f"run.py: creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("run.py: installing storegate and its development tools (first run only)", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(digest + "\n")


def run_tests(args: list[str]) -> int:
    """Lint, type-check, check the layering, then run pytest; the first failure decides the exit code."""
    steps = [
        [str(BIN / "ruff"), "check", "."],
        [str(BIN / "ruff"), "format", "--check", "."],
        [str(BIN / "mypy")],
        # The layering of docs/architecture.md: the contracts are [tool.importlinter] in pyproject.toml.
        [str(BIN / "lint-imports"), "--no-cache"],
        [str(BIN / "pytest"), *_parallel(args), *args],
    ]
    for step in steps:
        print(f"run.py: {' '.join(Path(step[0]).name if i == 0 else part for i, part in enumerate(step))}", flush=True)
        code = subprocess.run(step, cwd=ROOT, check=False).returncode
        if code != 0:
            return code
    return 0


# Most tests wait on a broker, a database or a subprocess: with one worker per core the cores were busy 1.3 of 2
# (12 min 52 s of CPU over 10 min 32 s on two cores), so three workers share two cores. Beyond four, each worker's
# own PostgreSQL template and brokers cost more than they save.
_MAX_WORKERS = 4


def _workers() -> int:
    cores = os.cpu_count() or 1
    return max(1, min(_MAX_WORKERS, cores + cores // 2))


def _parallel(args: list[str]) -> list[str]:
    """pytest-xdist's options, unless the caller chose the workers (``-n``) or turned xdist off."""
    chosen = any(arg.startswith(("-n", "--numprocesses", "--dist")) or arg.endswith("no:xdist") for arg in args)
    return [] if chosen else ["-n", str(_workers())]


def _shared_data_beside(path: Path) -> Path | None:
    for parent in (path, *path.parents):
        candidate = parent.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def find_shared_data() -> None:
    """Point ``STOREGATE_SHARED_DATA`` at the real-data folder for the demo and the tests, unless it is set.

    The folder sits beside the checkout (``../shared/data``). A clone made elsewhere (``git clone`` into a
    temporary directory) finds it beside the repository it was cloned from, when that is a local path.
    """
    if os.environ.get("STOREGATE_SHARED_DATA"):
        return
    found = _shared_data_beside(ROOT)
    if found is None:
        try:
            origin = subprocess.run(
                ["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        except OSError:  # no git: a checkout from an archive
            origin = ""
        if origin and "://" not in origin and Path(origin).is_dir():
            found = _shared_data_beside(Path(origin).resolve())
    if found is not None:
        os.environ["STOREGATE_SHARED_DATA"] = str(found)


def main(argv: list[str]) -> int:
    """Dispatch ``demo`` or ``test``."""
    if not argv or argv[0] not in {"demo", "test"}:
        print(__doc__, file=sys.stderr)
        return 2
    ensure_venv()
    find_shared_data()
    command, rest = argv[0], argv[1:]
    if command == "demo":
        storegate = str(BIN / "storegate")
        os.execv(storegate, [storegate, "demo", *rest])  # noqa: S606 - replaces this process on purpose
    return run_tests(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
