"""The supervisor's state file: what ``runa status`` reads and ``runa down`` acts on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runa.gilgul import write_atomically as write_file


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    """Replace the state file as a 0600 file: it names conversations, paths and errors."""
    write_file(path, json.dumps(data, indent=2, sort_keys=True), mode=0o600)


def read(path: Path) -> dict[str, Any] | None:
    """The last state written, or None when no supervisor has run."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return None

