"""Who consumes a queue, as the kernel says.

A queue's owner record (pid and start time) sits in the shared segment, where any process
of the uid can write it: good enough to reap dead owners, not to decide who may read a
secret. So the consumer of a queue also holds a POSIX record lock on one byte of the
segment file (past its end, at ``HOLD_BASE`` + the channel's index), and ``holder`` asks
the kernel (``F_GETLK``) which process holds that byte. Nobody can make the kernel name
another process as the holder of a lock it took.

POSIX record locks belong to a process and are released by the kernel when it dies, and
also when it closes *any* descriptor of the same file: a process that opens a second
``Bus`` on the same segment and closes it loses its holds (``holder`` then answers None for
its queues, so a check built on it refuses rather than trusts). Locks are not inherited
across ``fork``. ``F_GETLK`` does not report the asker's own locks: ``ChannelTable`` answers
for its own queues from what it holds.
"""

from __future__ import annotations

import fcntl
import os
import struct

#: The first byte of the hold range, past the end of any segment (locks there touch no data).
HOLD_BASE = 1 << 40
# struct flock on Linux (x86-64 and aarch64): short l_type, short l_whence, off_t l_start,
# off_t l_len, pid_t l_pid, padded to 32 bytes.
_FLOCK = struct.Struct("@hhqqi4x")


def take(fd: int, index: int) -> bool:
    """Hold the byte of channel ``index``; False when another process holds it."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, HOLD_BASE + index, os.SEEK_SET)
    except OSError:
        return False
    return True


def release(fd: int, index: int) -> None:
    """Let go of the byte of channel ``index`` (nothing happens if this process has none)."""
    fcntl.lockf(fd, fcntl.LOCK_UN, 1, HOLD_BASE + index, os.SEEK_SET)


def holder(fd: int, index: int) -> int | None:
    """The pid of the *other* process that holds channel ``index``'s byte, or None."""
    query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, HOLD_BASE + index, 1, 0)
    l_type, _whence, _start, _len, pid = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, query))
    return None if l_type == fcntl.F_UNLCK else pid
