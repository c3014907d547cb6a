"""Incarnation numbers handed to restarted components, through files systemd reads at start.

Each component unit has ``EnvironmentFile=-%t/runa/gilgul/<name>.env``; before gilgul starts a
new incarnation it writes ``RUNA_INCARNATION=<n>`` and ``RUNA_RESTART_REASON=<reason>`` there,
so the service base logs and heartbeats the right number without a daemon-reload. The files
live in gilgul's ``RuntimeDirectory=`` under ``$XDG_RUNTIME_DIR``, where a restarted gilgul
reads the numbers back; they last as long as the login session.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from runa.errors import RunaError
from runa.gilgul.units import write_atomically

_LINE = re.compile(r"^RUNA_INCARNATION=(\d+)$", re.MULTILINE)
_REASON = re.compile(r"^[a-z0-9-]{1,64}$")


def directory(env: Mapping[str, str]) -> Path:
    """``$XDG_RUNTIME_DIR/runa/gilgul``: what the units call ``%t/runa/gilgul``."""
    runtime = env.get("XDG_RUNTIME_DIR")
    if not runtime:
        raise RunaError("XDG_RUNTIME_DIR is not set: gilgul needs the user manager's runtime "
                        "directory")
    return Path(runtime) / "runa" / "gilgul"


class IncarnationFiles:
    def __init__(self, where: Path) -> None:
        self.where = where

    def path(self, component: str) -> Path:
        return self.where / f"{component}.env"

    def write(self, component: str, incarnation: int, reason: str) -> None:
        if not _REASON.match(reason):
            reason = "other"
        self.where.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(self.path(component),
                         f"RUNA_INCARNATION={incarnation}\nRUNA_RESTART_REASON={reason}\n",
                         mode=0o600)

    def read(self, component: str) -> int:
        """The last incarnation written for ``component``; 0 when there is none."""
        try:
            match = _LINE.search(self.path(component).read_text())
        except OSError:
            return 0
        return int(match.group(1)) if match else 0
