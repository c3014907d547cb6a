"""Keeping a process's memory out of core dumps and away from ptrace: every process a
secret value or the bus key passes through calls ``undumpable`` before it holds one."""

from __future__ import annotations

import ctypes
import os
import resource
from collections.abc import Callable

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36

Prctl = Callable[[int, int], int]


def libc_prctl(option: int, arg: int) -> int:
    """prctl(2) through libc; the result, or OSError."""
    libc = ctypes.CDLL(None, use_errno=True)
    result = int(libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0),
                            ctypes.c_ulong(0), ctypes.c_ulong(0)))
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def undumpable(prctl: Prctl = libc_prctl) -> None:
    """No core dump of this process (``RLIMIT_CORE`` 0, ``PR_SET_DUMPABLE`` 0), and no ptrace
    or /proc/<pid>/mem by another process of the user. An exec resets the flag, so a child
    that holds secrets must call this itself."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    prctl(PR_SET_DUMPABLE, 0)
