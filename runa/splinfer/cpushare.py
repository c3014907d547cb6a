"""How many threads llama.cpp should use now: the CPUs other programs leave free.

llama.cpp's threads meet at a barrier after every graph node. When another program keeps
one of two CPUs busy, one of our two threads runs only part of the time and the other spins
at the barrier waiting for it. Measured on a 2-CPU machine with SmolLM2-135M: one busy
process beside generation took 2 threads from 127 to 44 tokens/s while 1 thread kept 89
(bench/contention.py; docs/bench.md, "Contention"). So with ``splinfer.threads = -1`` the
engine asks a :class:`CpuShare` before each decode and sets llama.cpp's thread count to the
CPUs left free.

The measure is the machine's busy time (``/proc/stat``, only the CPUs this process may use)
minus this process's own CPU time since the previous sample: what others used. Our own
threads never count, so using fewer of them cannot make the machine look quieter or busier.
A sample is taken when ``threads()`` is asked and ``interval`` has passed; the daemon also
asks while idle (``Engine.watch_cpu``), so the first decode of an answer sees the last
second or so, not an average over the whole idle time before it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection

#: /proc/stat fields after the name that count as busy: user nice system irq softirq steal.
#: (idle and iowait are free time; guest time is already inside user.)
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def machine_busy_seconds(cpus: Collection[int], stat: str = "/proc/stat") -> float:
    """Seconds the CPUs in ``cpus`` have spent busy since boot (all programs, ours too)."""
    ticks = 0
    with open(stat, encoding="ascii") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            name, *fields = line.split()
            if name == "cpu" or int(name[3:]) not in cpus:
                continue
            ticks += sum(int(fields[i]) for i in _BUSY_FIELDS if i < len(fields))
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds this process (every thread) has used."""
    t = os.times()
    return t.user + t.system


class CpuShare:
    """The thread count to use: ``cpus`` minus the CPUs other programs kept busy lately.

    ``threads()`` is cheap between samples; it reads the counters again once ``interval``
    has passed. Others using less than half a CPU leave the count alone (rounding), and it
    never goes below one.
    """

    def __init__(
        self,
        cpus: int,
        *,
        machine: Callable[[], float],
        own: Callable[[], float] = own_cpu_seconds,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.5,
    ) -> None:
        self.cpus = max(1, cpus)
        self._machine = machine
        self._own = own
        self._clock = clock
        self._interval = interval
        self._last = (clock(), machine(), own())
        self._threads = self.cpus
        self.others = 0.0  # CPUs others used over the last sample

    @classmethod
    def for_this_process(cls, cpus: int | None = None, *, interval: float = 0.5) -> CpuShare:
        """Watching the CPUs this process may run on (taskset/cpusets respected).

        ``cpus`` is the most threads it will advise (default: the usable CPU count).
        """
        usable = frozenset(os.sched_getaffinity(0))
        return cls(len(usable) if cpus is None else cpus,
                   machine=lambda: machine_busy_seconds(usable), interval=interval)

    def threads(self) -> int:
        now = self._clock()
        then, machine_then, own_then = self._last
        elapsed = now - then
        if elapsed < self._interval:
            return self._threads
        machine, own = self._machine(), self._own()
        self._last = (now, machine, own)
        self.others = max(0.0, ((machine - machine_then) - (own - own_then)) / elapsed)
        self._threads = max(1, self.cpus - round(self.others))
        return self._threads
