"""One supervisor per runtime directory: a lock held for the supervisor's whole life.

Two ``runa up`` at once must not both bind ``notify.sock`` (the loser would delete the
winner's socket and every component would die in sd_notify). A check of the state file
then a start is a race; a POSIX record lock (``fcntl(F_SETLK)``) on
``supervisor.lock`` is not: the kernel grants it to one process, releases it when that
process dies however it dies (SIGKILL included), is not inherited by the children, and
answers ``F_GETLK`` with the holder's pid without taking the lock. So "the supervisor" is
the lock's holder, never a pid read from a file that a recycled pid may now carry. The
holder writes ``<pid> <stack>`` into the file, so others learn which stack it runs.

A POSIX lock is dropped when its process closes *any* descriptor of the file: the
supervisor's own process must not call :func:`holder`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from runa.errors import RunaError

LOCK_NAME = "supervisor.lock"
EX_TEMPFAIL = 75
# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
_FLOCK = struct.Struct("@hhqqi4x")


class AlreadySupervised(RunaError):
    """Another supervisor holds the lock: it runs the stack or is starting it."""

    exit_code = EX_TEMPFAIL

    def __init__(self, holder: Holder | None) -> None:
        self.holder = holder
        held = f"supervisor pid {holder.pid}" if holder else "another supervisor"
        super().__init__(f"{held} already runs this runtime directory (or is starting it)")


@dataclass(frozen=True)
class Holder:
    """The live supervisor: its pid, and its stack once it has written it (else None)."""

    pid: int
    stack: str | None


class SupervisorLock:
    """The lock on ``<runtime>/supervisor.lock``, taken with :meth:`acquire`."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, runtime: Path, stack: str) -> SupervisorLock:
        """Take the lock without waiting; AlreadySupervised (exit 75) when it is held."""
        path = runtime / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise AlreadySupervised(holder(runtime)) from None
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {stack}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        """Give the lock up (closing the file releases it); safe to call twice."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def holder(runtime: Path) -> Holder | None:
    """The process holding the lock (the live supervisor), or None.

    Asks the kernel (``F_GETLK``) and takes nothing, so a ``runa status`` never makes a
    concurrent ``runa up`` lose the lock.
    """
    try:
        fd = os.open(runtime / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, query))
        written = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    lock_type, pid = answer[0], answer[4]
    if lock_type == fcntl.F_UNLCK or pid <= 0:
        return None
    ours = len(written) == 2 and written[0] == str(pid)
    return Holder(pid, written[1] if ours else None)
