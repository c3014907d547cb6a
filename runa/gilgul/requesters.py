"""Who is asking for a secret, as the kernel says: a component, or the person.

The broker never believes an envelope's ``from`` (any process can write it). It asks the
kernel which process holds the request's ``reply_to`` queue (``Bus.queue_holder``), then
maps that pid to a requester the way the running mode knows processes:

- under systemd, ``/proc/<pid>/cgroup`` names the unit: a process of
  ``runa-<component>.service`` (the main process or any it started: a unit's cgroup holds
  them all) is that component;
- under Runa's own supervisor, its child table: a running child's pid (with the start
  time recorded at spawn, so a reused pid is not the child) is that component, and so is
  a process descended from it (walking ``PPid`` in ``/proc/<pid>/status``), so a component
  cannot gain the person's rights by running ``runa secret`` as a subprocess. The
  supervisor is a child subreaper: a process a component leaves behind (a double fork) is
  re-parented to it, and a process whose ancestry reaches the supervisor through no running
  child is ``UNKNOWN``, refused everything;
- anything else (a person's shell running ``runa secret``) is the person.

Both are plain functions of what ``/proc`` holds (an injected root in tests).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from runa.cgroup import read_cgroup, unit_of
from runa.protocol.secrets import PERSON
from runa.splinter.liveness import process_start_time

PROC = Path("/proc")
#: A process the supervisor adopted from a component (a double fork): no component, and not
#: the person either. A component's name cannot contain '-', so no component is called so.
UNKNOWN = "unknown-process"
_UNIT = re.compile(r"^runa-([a-z][a-z0-9_]{0,31})\.service$")
#: How far up the process tree a supervised component's descendant is looked for.
MAX_DEPTH = 32


@dataclass(frozen=True)
class Requester:
    """Who asks: a component's name, or ``PERSON``, and the pid the kernel named."""

    name: str
    pid: int

    @property
    def is_person(self) -> bool:
        return self.name == PERSON

    @property
    def is_unknown(self) -> bool:
        return self.name == UNKNOWN


Identify = Callable[[int], Requester]


@dataclass(frozen=True)
class Running:
    """A running child of the supervisor: its component, and its start time
    (``/proc/<pid>/stat`` field 22), which tells it from a later process given its pid."""

    name: str
    start_time: int


def unit_component(pid: int, proc: Path = PROC) -> str | None:
    """The component whose ``runa-<name>.service`` unit ``pid`` runs in, or None (a process
    of no unit of Runa's is nobody's component); ``runa.cgroup.unit_of`` reads the unit."""
    unit = unit_of(read_cgroup(pid, proc) or "")
    found = _UNIT.match(unit) if unit else None
    return found.group(1) if found else None


def parent_pid(pid: int, proc: Path = PROC) -> int | None:
    """The parent of ``pid`` as ``/proc/<pid>/status`` says (None once it is gone)."""
    try:
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def systemd_identify(proc: Path = PROC) -> Identify:
    """Requesters under systemd: by the unit of the pid's cgroup."""
    def identify(pid: int) -> Requester:
        return Requester(unit_component(pid, proc) or PERSON, pid)

    return identify


def children_identify(children: Callable[[], Mapping[int, Running]],
                      supervisor: int | None = None,
                      parent: Callable[[int], int | None] = parent_pid,
                      start_time: Callable[[int], int | None] = process_start_time,
                      ) -> Identify:
    """Requesters under the supervisor: ``children()`` maps each running child's pid to its
    component and start time (read at each request: a restarted child has a new pid).

    A pid in the table is that child only while its start time is the recorded one (a dead
    child's pid may have been reused). ``supervisor``, a subreaper, adopts what a component
    leaves behind: a process whose ancestry reaches it through no running child is
    ``UNKNOWN``, refused everything, not the person."""
    def identify(pid: int) -> Requester:
        table = children()
        current: int | None = pid
        for _ in range(MAX_DEPTH):
            if current is None or current <= 1:
                break
            entry = table.get(current)
            if entry is not None and start_time(current) == entry.start_time:
                return Requester(entry.name, pid)
            if current == supervisor:
                return Requester(UNKNOWN, pid)
            current = parent(current)
        return Requester(PERSON, pid)

    return identify
