"""The heartbeat record: what ``<component>:health`` holds (docs/protocol.md, Health).

A service writes it once an interval from its work loop; gilgul reads it to tell a live
component from a hung one, and a client reads it to learn which process answers for a
service. All three use this one type, so the fields and their JSON cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


def health_key(component: str) -> str:
    """The bus key ``component`` heartbeats under."""
    return f"{component}:health"


def is_health_key(key: str) -> bool:
    """Whether ``key`` is a service heartbeat: machinery, read by every client, never memory."""
    component, _, kind = key.partition(":")
    return bool(component) and kind == "health"


@dataclass(frozen=True)
class Heartbeat:
    """One beat of ``component``: its main process, incarnation, monotonic time and status.

    ``component`` names the key, not the value: the JSON holds the other four fields.
    """

    component: str
    pid: int
    incarnation: int
    ts_mono_ns: int  # CLOCK_MONOTONIC, comparable on the same machine only
    status: str = ""

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "incarnation": self.incarnation,
                           "ts_mono_ns": self.ts_mono_ns, "status": self.status})

    @classmethod
    def from_json(cls, component: str, value: bytes | str | None) -> Heartbeat | None:
        """The beat a ``<component>:health`` value holds; None if absent or malformed."""
        if value is None:
            return None
        try:
            data = json.loads(value)
            return cls(component, int(data["pid"]), int(data["incarnation"]),
                       int(data["ts_mono_ns"]), str(data.get("status", "")))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
