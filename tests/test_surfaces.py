"""Each package's curated surface: ``__all__`` is what other packages use, and all they use.

Other packages import a package's public names from the package itself
(``from runa.tieto import open_tieto``); its modules are internal. Tests and the
benchmarks may reach inside, since they measure and check the insides.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

RUNA = Path(__file__).resolve().parent.parent / "runa"
CURATED = ("chat", "coven", "demo", "keeper", "models", "splinfer", "testing", "tieto")


@pytest.mark.parametrize("package", CURATED)
def test_every_listed_name_is_there(package: str) -> None:
    module = importlib.import_module(f"runa.{package}")
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError, match=f"'runa.{package}' has no attribute 'nothing_here'"):
        module.nothing_here  # noqa: B018


@pytest.mark.parametrize("package", CURATED)
def test_importing_a_package_imports_none_of_its_modules(package: str) -> None:
    """``runa chat`` imports runa.tieto for one heading: that must not load the index."""
    code = (f"import sys, runa.{package}; "
            f"print(sorted(m for m in sys.modules if m.startswith('runa.{package}.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def surface_violations(root: Path) -> list[str]:
    """Each import, in the modules under ``root``, of a curated package's internal module or
    of a name it does not list; one line each, with the file and line."""
    wrong = []
    for path in sorted(root.rglob("*.py")):
        inside = path.relative_to(root).parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            parts = node.module.split(".")
            if parts[0] != "runa" or len(parts) < 2 or parts[1] not in CURATED \
                    or parts[1] == inside:
                continue
            package = f"runa.{parts[1]}"
            if len(parts) > 2:
                wrong.append(f"{path}:{node.lineno}: imports {node.module}, an internal "
                             f"module; import from {package}")
                continue
            public = importlib.import_module(package).__all__
            if unlisted := [alias.name for alias in node.names if alias.name not in public]:
                wrong.append(f"{path}:{node.lineno}: {package} does not export {unlisted}")
    return wrong


def test_other_packages_use_only_the_listed_names() -> None:
    assert surface_violations(RUNA) == []


def test_a_component_reaching_into_another_is_named_with_its_file_and_line(
        tmp_path: Path) -> None:
    """What a newcomer adding a component sees when it reaches into another package."""
    module = tmp_path / "newcomer" / "daemon.py"
    module.parent.mkdir()
    module.write_text("from runa.tieto import open_tieto, Tieto\n"
                      "from runa.tieto.index import TopicIndex\n"
                      "from runa.splinter import Bus\n")
    assert surface_violations(tmp_path) == [
        f"{module}:1: runa.tieto does not export ['Tieto']",
        f"{module}:2: imports runa.tieto.index, an internal module; import from runa.tieto",
    ]
