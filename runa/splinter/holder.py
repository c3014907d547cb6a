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

Adopting a queue whose owner record looks dead takes the hold first: if the kernel says a
live process still holds it, the queue is not adopted (``ChannelBusy``), so the record and
the hold never name two processes.

The holder of a reply queue is who *receives* an answer, not who *sent* the request: any
process may name another's queue in ``reply_to``. So the sender of a request also holds a
*request claim*: a record lock on one byte at ``REQUEST_BASE`` + a 56-bit hash of the
request's envelope id (``claim_offset``), taken before the envelope is sent and released
once the answer came (or the wait ended). ``claimant`` asks the kernel who holds it. A
service that acts on a request's behalf (coven, gilgul's secrets broker) acts only when the
claimant of the request id is the holder of its ``reply_to``. The hash makes the offset of
an id that is not yet on the bus unguessable (no search of 2**56 ids for a claimed byte),
and a copy of a request read from the ring (same id, claimant still waiting) is caught by
the service remembering the ids it served.

A second ``Bus`` (or ``Segment``) on the same segment, opened and closed in the same
process, releases every hold *and* claim of that process, since the kernel drops a
process's record locks on any close of the file: open one ``Bus`` per segment per process.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct

#: The first byte of the hold range, past the end of any segment (locks there touch no data).
HOLD_BASE = 1 << 40
#: The first byte of the request claims (``HOLD_BASE`` + any channel index stays below it).
REQUEST_BASE = 1 << 61
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
    return _locker(fd, HOLD_BASE + index)


def claim_offset(request_id: str) -> int:
    """The byte claimed by the sender of request ``request_id``."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=7).digest()
    return REQUEST_BASE + int.from_bytes(digest, "little")


def claim(fd: int, request_id: str) -> bool:
    """Claim request ``request_id`` as its sender; False when another process claims it."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, claim_offset(request_id),
                    os.SEEK_SET)
    except OSError:
        return False
    return True


def unclaim(fd: int, request_id: str) -> None:
    """Let go of the claim of request ``request_id`` (its answer came, or the wait ended)."""
    fcntl.lockf(fd, fcntl.LOCK_UN, 1, claim_offset(request_id), os.SEEK_SET)


def claimant(fd: int, request_id: str) -> int | None:
    """The pid of the *other* process that claims request ``request_id`` (its sender), or
    None."""
    return _locker(fd, claim_offset(request_id))


def _locker(fd: int, offset: int) -> int | None:
    query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    l_type, _whence, _start, _len, pid = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, query))
    return None if l_type == fcntl.F_UNLCK else pid
