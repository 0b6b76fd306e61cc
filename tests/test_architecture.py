"""The layering contracts of docs/architecture.md catch what they promise to catch.

``python3 run.py test`` runs ``lint-imports`` over the real tree, where every contract holds. Here each contract is
broken on purpose in a copy of the packages, and the same command must fail and name that contract.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def contracts() -> dict[str, str]:
    """Contract id -> name, as pyproject.toml declares them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract["name"] for contract in config["contracts"]}


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` as run.py runs it, over the packages in ``tree`` (they come first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "1000"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def pristine_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's packages and pyproject.toml, copied once."""
    tree = tmp_path_factory.mktemp("layering")
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
    for package in packages:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_every_contract_holds_on_the_real_tree(pristine_copy: Path) -> None:
    result = lint_imports(pristine_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(contracts())} kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("contract", "module", "forbidden_import"),
    [
        ("shared-is-a-leaf", "storegate/wire.py", "import edge_agent.config"),
        ("agent-and-hub-apart", "hub/metrics.py", "import edge_agent.outbox"),
        ("drivers-below-agent", "device_drivers/base.py", "import edge_agent.errors"),
        ("floors", "provisioning/agent_config.py", "import launcher.cli"),
        ("gateway-without-hub-packages", "edge_agent/runner.py", "import fastapi"),
        ("hub-domain-is-pure", "hub/domain/ledger.py", "import sqlalchemy"),
        ("hub-domain-is-pure", "hub/domain/rules.py", "import hub.alerting.alerts_db"),
        ("hub-db-below-its-users", "hub/db/bulk.py", "import hub.ingest.presence"),
    ],
)
def test_a_contract_broken_on_purpose_fails_the_check(
    pristine_copy: Path, tmp_path: Path, contract: str, module: str, forbidden_import: str
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(pristine_copy, tree)
    source = tree / module
    source.write_text(source.read_text() + f"\n{forbidden_import}  # broken on purpose\n")

    result = lint_imports(tree)

    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if " BROKEN" in line]
    assert any(line.startswith(contracts()[contract]) for line in broken), result.stdout
