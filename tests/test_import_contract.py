"""The import contract of DESIGN §7 (``.importlinter``) holds, and it bites.

``make lint`` runs ``lint-imports``; these tests run it too: on this checkout, where every
contract is kept, and on a copy of ``runa/`` with one forbidden import added, where the check
fails naming the import and its line. (test_layers.py checks what importing loads at run time.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parent.parent


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` as ``make lint`` runs it, on the ``runa`` package under ``tree``."""
    run = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    return subprocess.run(
        [sys.executable, "-c", run, "--no-cache", "--no-logo"], cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of this checkout's ``runa/`` and its contract, to add imports to."""
    shutil.copytree(ROOT / "runa", tmp_path / "runa",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path)
    return tmp_path


def add_line(module: Path, line: str) -> int:
    """Append ``line`` to ``module``; its line number."""
    text = module.read_text()
    module.write_text(text + line + "\n")
    return text.count("\n") + 1


def test_this_checkout_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_library_importing_a_component_breaks_the_layers(tree: Path) -> None:
    line = add_line(tree / "runa/paths.py", "import runa.splinfer  # noqa: E402, F401")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout
    assert "libraries -> protocol -> service base -> components -> CLI BROKEN" in result.stdout
    assert "runa.paths is not allowed to import runa.splinfer" in result.stdout
    assert f"- runa.paths -> runa.splinfer (l.{line})" in result.stdout


def test_a_component_importing_another_components_module_breaks_its_contract(
        tree: Path) -> None:
    line = add_line(tree / "runa/tieto/api.py",
                    "from runa.splinfer.engine import Engine  # noqa: E402, F401")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout
    assert "Only splinfer and the CLI import splinfer's modules BROKEN" in result.stdout
    assert f"- runa.tieto.api -> runa.splinfer.engine (l.{line})" in result.stdout
    assert "CLI KEPT" in result.stdout  # components may import each other's packages ...


def test_a_component_may_import_what_another_exports(tree: Path) -> None:
    add_line(tree / "runa/tieto/api.py", "import runa.splinfer  # noqa: E402, F401")
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout  # ... the names their __init__ exports


def test_a_new_package_must_be_placed_in_a_layer(tree: Path) -> None:
    (tree / "runa/newcomp").mkdir()
    (tree / "runa/newcomp/__init__.py").write_text('"""A component not yet placed."""\n')
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout
    assert "The following modules are not listed as layers:\n\n- runa.newcomp" in result.stdout
