"""The supervisor as a child subreaper: what a component leaves behind stays in its tree.

A component that double-forks (``setsid sh -c '… &'``) would otherwise leave a process
re-parented to init, outside the supervisor's process tree, where the secrets broker
cannot tell it from the person's shell. As a subreaper (``PR_SET_CHILD_SUBREAPER``) the
supervisor adopts such processes instead: the broker then sees that they descend from the
supervisor through no running child and refuses them. What it adopts it must also reap.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Set

from runa.crypto.process import PR_SET_CHILD_SUBREAPER, Prctl, libc_prctl


def become_subreaper(prctl: Prctl = libc_prctl) -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def reap_adopted(ours: Callable[[], Set[int]]) -> int:
    """Reap the ended processes this one adopted; never one in ``ours()`` (the children and
    scripts it started, whose status their ``Popen`` reads). Returns how many were reaped."""
    reaped = 0
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped
        if info is None or info.si_pid in ours():
            return reaped  # one of ours is first: it is reaped by its owner, the rest next time
        os.waitpid(info.si_pid, 0)
        reaped += 1
