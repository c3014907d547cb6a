"""Names that travel on the wire and become file names: topics and conversations."""

from __future__ import annotations

import re

_TOPIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def topic_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a topic (it becomes a directory name), or None if it can."""
    if isinstance(name, str) and _TOPIC_NAME.fullmatch(name):
        return None
    return (f"topic name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")


_CONVERSATION_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def conversation_id_problem(value: object) -> str | None:
    """Why ``value`` cannot be a conversation id (splinfer names files after it), or None.

    A client chooses the id (a UUID, say): 1 to 64 of ``A-Z a-z 0-9 _ . -``, not ``.``/``..``.
    """
    if isinstance(value, str) and _CONVERSATION_ID.fullmatch(value) and value not in (".", ".."):
        return None
    return f"conversation must be 1 to 64 of A-Z a-z 0-9 _ . -, not {value!r}"
