"""Drop-ins carrying the configuration's CPUQuota=, MemoryMax= and WatchdogSec= (DESIGN §5).

The committed units hold the packaged defaults; what a person or administrator configures
(``[components.<name>]``) reaches the units as ``<unit>.d/50-runa-limits.conf`` in the user
manager's runtime unit directory, followed by one daemon-reload. The name sorts before
``override.conf``, so a ``systemctl --user edit`` by hand still has the last word. Every file is
planned (rendered in memory) before any is written; a file is only rewritten when it changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from runa.errors import RunaError
from runa.gilgul.units import Limits, write_atomically

NAME = "50-runa-limits.conf"


def unit_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_RUNTIME_DIR/systemd/user``: the manager's runtime unit directory."""
    runtime = env.get("XDG_RUNTIME_DIR")
    if not runtime:
        raise RunaError("XDG_RUNTIME_DIR is not set: gilgul cannot find the user manager's "
                        "runtime unit directory")
    return Path(runtime) / "systemd" / "user"


def render(limits: Limits) -> str:
    return ("# Written by gilgul from the effective configuration ([components.<name>]);\n"
            "# rewritten whenever gilgul starts or reloads. See docs/gilgul.md.\n"
            "[Service]\n"
            f"CPUQuota={limits.cpu_quota}\n"
            f"MemoryMax={limits.memory_max}\n"
            f"WatchdogSec={limits.watchdog_sec}\n")


class DropIns:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, unit: str) -> Path:
        return self.directory / f"{unit}.d" / NAME

    def plan(self, desired: Mapping[str, Limits]) -> dict[Path, str]:
        """The files that must change for ``desired`` (``{unit: limits}``), with their text."""
        changes = {}
        for unit, limits in desired.items():
            path, text = self.path(unit), render(limits)
            try:
                current = path.read_text()
            except OSError:
                current = None
            if current != text:
                changes[path] = text
        return changes

    def apply(self, changes: Mapping[Path, str]) -> list[Path]:
        for path, text in changes.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, text)
        return list(changes)
