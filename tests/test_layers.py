"""The house's structure: import layers (import-linter), stage subpackages, file sizes.

``lint-imports`` runs on the real project, and once more on a copy where a module under
``tasks/`` imports from ``flows/``, which must fail: a contract that cannot fail checks nothing.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("videobert", "flows", "tasks", "models", "warehouse")
STAGES = ("ingest", "tokens", "pretrain", "retrieval", "nightly", "caption", "shared")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    # PYTHONPATH first: the copy's packages win over the editable install's.
    return subprocess.run([*cmd, "--no-cache", "--no-logo"], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin",
                                                       "PYTHONPATH": str(cwd)})


def _contracts() -> list[dict]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert cfg["root_packages"] == list(PACKAGES)
    return cfg["contracts"]


def test_contracts_declare_the_layers_and_ignore_nothing() -> None:
    contracts = _contracts()
    layers = [c for c in contracts if c["type"] == "layers" and not c.get("containers")]
    assert [c["layers"] for c in layers] == [list(PACKAGES)]
    stages = [c for c in contracts if c.get("containers") == ["tasks"]]
    assert stages and stages[0]["layers"][-1] == "shared"
    assert any(c["type"] == "acyclic_siblings" for c in contracts)
    assert not [c["name"] for c in contracts if c.get("ignore_imports")]


def test_lint_imports_passes_on_the_project() -> None:
    res = _lint_imports(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("tasks/retrieval/metrics.py", "from flows import runners  # noqa", "Layers"),
    ("tasks/tokens/codebook.py", "from tasks.ingest import scan  # noqa", "Stages"),
    ("warehouse/schema.py", "from warehouse import store  # noqa", "cycles"),
])
def test_an_upward_or_sideways_import_breaks_a_contract(tmp_path: Path, module: str, line: str,
                                                         broken: str) -> None:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}\n")
    res = _lint_imports(tmp_path)
    assert res.returncode != 0, res.stdout
    broken_section = res.stdout.split("Broken contracts", 1)[-1]
    assert broken in broken_section, res.stdout


def test_tasks_is_one_subpackage_per_stage() -> None:
    tasks = ROOT / "tasks"
    top = sorted(p.name for p in tasks.glob("*.py"))
    assert top == ["__init__.py"], top
    subs = sorted(p.name for p in tasks.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert subs == sorted(STAGES)
    for stage in STAGES:
        doc = ast.get_docstring(ast.parse((tasks / stage / "__init__.py").read_text()))
        assert doc, f"tasks/{stage}/__init__.py has no docstring"
        lines = doc.splitlines()
        assert any(ln.startswith("Reads:") for ln in lines), stage
        assert any(ln.startswith("Writes:") for ln in lines), stage


def test_no_python_file_over_500_lines() -> None:
    files = [p for d in (*PACKAGES, "tests", "bench") for p in (ROOT / d).rglob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_cli_registers_its_commands_explicitly() -> None:
    """Command modules never import the app: it imports them and lists every command."""
    for f in (ROOT / "videobert").glob("cli_*.py"):
        tree = ast.parse(f.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "videobert.cli" not in imported, f.name
    from typer.main import get_command

    from videobert.cli import COMMANDS, app

    cmd = get_command(app)
    top = {name for group, name, _ in COMMANDS if not group}
    assert top <= set(cmd.commands)
    for group, name, _ in COMMANDS:
        if group:
            assert name in cmd.commands[group].commands
