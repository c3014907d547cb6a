"""Names that travel on the wire and become file names: the rule a topic name follows."""

from __future__ import annotations

import re

_TOPIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def topic_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a topic (it becomes a directory name), or None if it can."""
    if isinstance(name, str) and _TOPIC_NAME.fullmatch(name):
        return None
    return (f"topic name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")
