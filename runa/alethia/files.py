"""The store's file operations: appends that can be taken back, atomic replaces, the lock.

An append writes one batch with a single ``write`` and fsyncs it; when the write fails
(ENOSPC, EIO) the file is cut back to its length before the batch, so nothing half-written
stays. A replace goes to ``.<name>.<pid>.tmp`` beside the target, is fsynced, renamed over
it and the directory fsynced: a crash leaves the old file or the new one.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from runa.alethia.errors import StoreError, StoreFull

FULL = (errno.ENOSPC, errno.EDQUOT)


def failure(path: Path, error: OSError) -> StoreError:
    """The store's error for an OSError at ``path``: StoreFull when the disk is full."""
    if error.errno in FULL:
        return StoreFull(f"{path}: the disk is full; nothing of this batch was kept")
    return StoreError(f"{path}: {error.strerror or error}")


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def append(path: Path, data: bytes) -> int:
    """Append ``data`` to ``path`` (created 0600 if absent) and fsync; its offset in the file.

    On failure the file is cut back to where it was (removed if this made it) and the
    error raised as StoreFull or StoreError.
    """
    created = not path.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise failure(path, error) from None
    start = os.fstat(fd).st_size
    try:
        _write_all(fd, data)
        os.fsync(fd)
        if created:
            fsync_directory(path.parent)
    except OSError as error:
        try:
            os.ftruncate(fd, start)  # needs no space: the chain ends where it did
            os.fsync(fd)
        except OSError:
            pass  # still torn: the next open cuts what follows the last signed batch
        os.close(fd)
        if created:
            path.unlink(missing_ok=True)
        raise failure(path, error) from None
    os.close(fd)
    return start


def cut(path: Path, length: int) -> None:
    """Cut ``path`` to ``length`` bytes, durably."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, length)
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(path: Path, data: bytes) -> None:
    """Make ``path`` hold ``data`` (0600), atomically and durably; on failure it is as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise failure(path, error) from None


def remove_temporaries(directory: Path) -> int:
    """Delete the temporary files a killed writer left in ``directory``; how many."""
    count = 0
    for leftover in directory.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
        count += 1
    return count


def lock(directory: Path) -> int:
    """Take ``directory``'s lock file (flock, exclusive, not waiting); the fd to close.

    The kernel drops the lock when the holder dies, so a killed daemon never wedges the store.
    """
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"{directory}: the store is open in another process (its lock is "
                         f"held); one writer at a time") from None
    return fd
