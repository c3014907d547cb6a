"""Is the process that owns a channel still the same live process?

A pid alone is not an identity (pids are reused), so an owner is recorded as (pid, start time), the
start time being field 22 of /proc/<pid>/stat (clock ticks since boot). A zombie counts as dead: it
will never read its channel again, and ``kill(pid, 0)`` would still say it exists.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def process_start_time(pid: int, proc: Path = PROC) -> int | None:
    """Start time of ``pid`` in clock ticks, or None if it does not exist or is a zombie.

    ``proc`` is where procfs is mounted (a test gives a directory of its own to show a
    state, such as ``X``, that no real process can be held in)."""
    try:
        raw = (proc / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    rest = raw[raw.rfind(b")") + 2 :].split()
    state = rest[0]  # field 3
    if state in (b"Z", b"X", b"x"):
        return None
    return int(rest[19])  # field 22


def is_alive(pid: int, start_time: int) -> bool:
    """True if ``pid`` exists, is not a zombie, and started at ``start_time``."""
    if pid <= 0:
        return False
    return process_start_time(pid) == start_time


def self_identity() -> tuple[int, int]:
    """(pid, start time) of the calling process."""
    pid = os.getpid()
    start = process_start_time(pid)
    if start is None:  # pragma: no cover - /proc not mounted
        raise OSError("cannot read /proc/self/stat; splinter needs /proc")
    return pid, start
