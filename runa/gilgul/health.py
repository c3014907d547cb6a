"""Telling a live component from one that stopped heartbeating (docs/protocol.md, Health).

Every component writes ``<component>:health`` once a second from its work loop, with a TTL of
three intervals. A component counts as beating while its key exists, names its current main
process and is younger than three intervals; gilgul acts once it has not been beating for
``gilgul.heartbeat_timeout_s`` (the Minix reincarnation server's "late" ping), counted from the
moment the unit became active, so a fresh incarnation gets the same grace. Pure: times in, late
components out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Beat:
    pid: int
    incarnation: int
    ts_mono_ns: int
    status: str


def parse(value: bytes | None) -> Beat | None:
    """A health value as written by ``runa.stackbus.HealthWriter``; None if absent or malformed."""
    if value is None:
        return None
    try:
        data = json.loads(value)
        return Beat(int(data["pid"]), int(data["incarnation"]), int(data["ts_mono_ns"]),
                    str(data.get("status", "")))
    except (ValueError, KeyError, TypeError):
        return None


class HeartbeatWatch:
    """When each watched component last showed a fresh beat; who is late."""

    def __init__(self, timeout_s: float, interval_s: float) -> None:
        self.timeout_s = timeout_s
        self.stale_ns = int(3 * interval_s * 1e9)
        self._last_ok: dict[str, float] = {}

    def started(self, component: str, now: float) -> None:
        """The component became active at ``now``: its grace starts."""
        self._last_ok[component] = now

    def stopped(self, component: str) -> None:
        self._last_ok.pop(component, None)

    def watching(self) -> list[str]:
        return sorted(self._last_ok)

    def observe(self, component: str, beat: Beat | None, main_pid: int, now: float,
                now_ns: int) -> bool:
        """Record what the bus shows for ``component``; True when the beat is fresh."""
        fresh = (beat is not None and beat.pid == main_pid
                 and now_ns - beat.ts_mono_ns <= self.stale_ns)
        if fresh and component in self._last_ok:
            self._last_ok[component] = now
        return fresh

    def silent_for(self, component: str, now: float) -> float:
        return now - self._last_ok.get(component, now)

    def late(self, now: float) -> list[str]:
        """Components without a fresh beat for longer than the timeout (0: never)."""
        if self.timeout_s <= 0:
            return []
        return sorted(name for name, seen in self._last_ok.items()
                      if now - seen > self.timeout_s)
