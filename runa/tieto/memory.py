"""Short-term memory: the bus keys the keeper promotes, filed into the user's topic.

The keeper announces a key read often with a ``promote`` event (docs/protocol.md,
Decay); the event names the key, not its value, so tieto reads the value from the
bus and files it as one document. Only per-user data is filed — keys
``user:<uid>:…`` (docs/protocol.md, Key names): other components' keys (health,
conversation metadata) are read often by machinery, not remembered by a person.

On a personal stack the topic is ``tieto.short_term_topic`` ("short-term"); on
the shared stack each user has their own, ``<topic>-u<uid>``. A key promoted
again replaces its earlier document (same source name), and an unchanged value
is not embedded again.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from runa.paths import SHARED_STACK
from runa.tieto.sources import Record

USER_KEY = re.compile(r"^user:(\d+):(.+)$")
SOURCE_PREFIX = "bus:"


@dataclass(frozen=True)
class Memory:
    """One promoted key ready to file: where, under which name, as which record."""

    topic: str
    name: str
    """The document's source name in the topic: ``bus:<key>``."""
    sha256: str
    record: Record


def target_topic(key: str, stack: str, base: str) -> str | None:
    """The short-term topic a promoted ``key`` belongs in, or None if it is not a user's."""
    match = USER_KEY.match(key)
    if match is None:
        return None
    return f"{base}-u{match.group(1)}" if stack == SHARED_STACK else base


def memory(event: dict[str, Any], value: bytes, stack: str, base: str) -> Memory | None:
    """The document for a ``promote`` event whose key holds ``value``; None to skip it."""
    key = event.get("key")
    if not isinstance(key, str):
        return None
    topic = target_topic(key, stack, base)
    if topic is None:
        return None
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None  # binary values are not memories a person can ask about
    if not text:
        return None
    meta = {"key": key, "bus": event.get("bus", "main"), "reads": event.get("total_reads")}
    record = Record(key="", line=1, text=text, meta=meta)
    return Memory(topic, SOURCE_PREFIX + key, hashlib.sha256(value).hexdigest(), record)
