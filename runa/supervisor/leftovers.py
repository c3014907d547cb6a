"""What a killed supervisor left behind, found and ended by the next ``runa up``.

Children die with their supervisor (``PR_SET_PDEATHSIG``), but a child that was stopped
(SIGSTOP), or is slow to shut down, can outlive it. The next supervisor reads the old state
file and ends every recorded process that is still the same process (same pid *and* start
time, so a recycled pid is never touched). It cleans up rather than adopts: only a parent
can wait for a process's exit status, and a component whose supervisor died has already
been told to stop. The buses live in the keeper's segments, not in any process, so their
contents survive this.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runa.splinter.liveness import PROC, process_start_time


@dataclass(frozen=True)
class Leftover:
    name: str
    pid: int


def find(previous: Mapping[str, Any] | None, proc: Path = PROC) -> list[Leftover]:
    """Processes of the previous supervisor's state that still run as themselves."""
    if not previous:
        return []
    found = []
    for component in previous.get("components", []):
        pid, ticks = component.get("pid"), component.get("start_ticks")
        if pid and ticks and process_start_time(pid, proc) == ticks:
            found.append(Leftover(component["name"], pid))
    return found


def end(leftovers: list[Leftover], grace: float,
        clock: Callable[[], float] = time.monotonic) -> list[str]:
    """SIGTERM (and SIGCONT, as systemd does, so a stopped process hears it), then SIGKILL
    after ``grace`` seconds. Returns the names of the processes that had to be killed."""
    ticks = {item.pid: process_start_time(item.pid) for item in leftovers}
    for item in leftovers:
        _signal(item.pid, signal.SIGTERM)
        _signal(item.pid, signal.SIGCONT)
    deadline = clock() + grace
    alive = list(leftovers)
    while alive and clock() < deadline:
        time.sleep(0.05)
        alive = [i for i in alive if process_start_time(i.pid) == ticks[i.pid]]
    for item in alive:
        _signal(item.pid, signal.SIGKILL)
    return [item.name for item in alive]


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
