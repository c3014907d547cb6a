"""Who may ask coven: gilgul only, as the kernel names it (docs/coven.md, "The daemon").

The envelope's ``from`` is text anyone can write, so it is never trusted. What the kernel says
is: which process consumes the request's ``reply_to`` queue (``Bus.queue_holder``, a POSIX
record lock only its holder can have taken), coven's own parent (``getppid``), and which
cgroup a process is in (``/proc/<pid>/cgroup``). With those:

- **under systemd** (coven's own cgroup is its unit, ``runa-coven.service``), the holder must
  be in gilgul's unit, ``runa-gilgul.service``;
- **without systemd** (``runa up``: the supervisor plays gilgul and is the parent of every
  component), the holder must be coven's parent. A component is a sibling, never the parent,
  so it cannot pass; a process that starts its own coven is its parent, but it runs as the
  same user and could read the vault file as well (docs/security.md).

This module decides from those facts alone, so it is tested without processes; the daemon
gathers them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from runa.cgroup import read_cgroup as read_cgroup  # coven's daemon reads it from here
from runa.cgroup import unit_of
from runa.registry import unit_name

GILGUL_UNIT = unit_name("gilgul")
COVEN_UNIT = unit_name("coven")


class Mode(enum.Enum):
    SYSTEMD = "systemd"
    SUPERVISOR = "supervisor"


@dataclass(frozen=True)
class Decision:
    """Whether a request is answered, and why (a sentence for the audit record)."""

    allowed: bool
    why: str


def mode_of(own_cgroup_text: str) -> Mode:
    """systemd when coven runs as its own unit, the supervisor's child otherwise."""
    return Mode.SYSTEMD if unit_of(own_cgroup_text) == COVEN_UNIT else Mode.SUPERVISOR


def decide(holder: int | None, *, mode: Mode, ppid: int,
           holder_cgroup: str | None) -> Decision:
    """Whether the process ``holder`` (the kernel's consumer of ``reply_to``) is gilgul.

    ``holder_cgroup`` is its ``/proc/<pid>/cgroup`` (None: unreadable, e.g. it has exited).
    """
    if holder is None:
        return Decision(False, "no live process consumes the reply queue")
    if mode is Mode.SUPERVISOR:
        if holder == ppid:
            return Decision(True, f"pid {holder} is coven's parent, the supervisor")
        return Decision(False, f"pid {holder} is not coven's parent (pid {ppid}, the "
                               "supervisor)")
    unit = unit_of(holder_cgroup) if holder_cgroup is not None else None
    if unit == GILGUL_UNIT:
        return Decision(True, f"pid {holder} is in {GILGUL_UNIT}")
    return Decision(False, f"pid {holder} is in {unit or 'no unit'}, not {GILGUL_UNIT}")

