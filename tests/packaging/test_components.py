"""The per-component packages follow the component registry (packaging/components.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pkgsupport import ROOT

SCRIPT = ROOT / "packaging/components.py"


def test_control_and_spec_are_in_step_with_the_registry() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_a_new_component_gets_its_debian_and_fedora_package(tmp_path: Path) -> None:
    # The script on a copy of the three files it reads and writes, with one more component.
    for rel in ("runa/data/components.toml", "debian/control", "packaging/fedora/runa.spec"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((ROOT / rel).read_text())
    (tmp_path / "packaging/components.py").write_text(SCRIPT.read_text())
    registry = tmp_path / "runa/data/components.toml"
    registry.write_text(registry.read_text() + '\n[components.oracle]\n'
                        'description = "Runa oracle (oracle): answers riddles"\n')
    script = [sys.executable, str(tmp_path / "packaging/components.py")]
    stale = subprocess.run([*script, "--check"], capture_output=True, text=True)
    assert stale.returncode == 1 and "debian/control" in stale.stderr
    subprocess.run(script, check=True)
    control = (tmp_path / "debian/control").read_text()
    spec = (tmp_path / "packaging/fedora/runa.spec").read_text()
    assert "Package: runa-oracle\n" in control
    assert "runa-oracle (= ${source:Version})" in control  # the metapackage wants it
    assert "%package -n runa-oracle\n" in spec
    assert "Requires: runa-oracle = %{version}-%{release}" in spec
    assert "%{_userunitdir}/runa-oracle.service" in spec
    assert subprocess.run([*script, "--check"]).returncode == 0
