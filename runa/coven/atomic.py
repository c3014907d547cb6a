"""Replacing a file so that a crash at any point leaves the old one or the new one.

A write goes to a temporary file in the same directory (``.<name>.<pid>.tmp``, mode 0600),
is fsynced, renamed over the target, and the directory is fsynced, so the rename itself is
durable. Whoever reads the target meanwhile sees the old file or the new one, never part of
one. Temporary files a killed writer leaves are removed by ``remove_temporaries``, which the
vault calls under its lock.

``Checkpoint`` is the seam between the steps: the vault calls it with the name of the step
just done (``STEPS``), and the crash tests pass one that kills the process right there.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from runa.coven.errors import VaultWriteError

Checkpoint = Callable[[str], None]

#: The steps of one atomic write, in order; the checkpoint names are ``<label>.<step>``.
STEPS = ("half-written", "written", "synced", "renamed", "durable")


def no_checkpoint(step: str) -> None:
    """The checkpoint of a real run: nothing happens between the steps."""


def _open_directory(directory: Path) -> int:
    try:
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise VaultWriteError(directory, f"cannot open the directory: {error.strerror}") from None


def fsync_directory(directory: Path) -> None:
    fd = _open_directory(directory)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def replace_file(path: Path, data: bytes | bytearray, *, label: str,
                 checkpoint: Checkpoint = no_checkpoint) -> None:
    """Make ``path`` hold ``data`` (mode 0600), atomically and durably (see module doc).

    A failed write raises VaultWriteError and leaves ``path`` as it was.
    """
    tmp = temporary_for(path)
    try:
        tmp.unlink(missing_ok=True)  # a killed writer's, with this pid: ours under the lock
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            half = len(data) // 2
            _write_all(fd, memoryview(data)[:half])
            checkpoint(f"{label}.half-written")
            _write_all(fd, memoryview(data)[half:])
            checkpoint(f"{label}.written")
            os.fsync(fd)
        finally:
            os.close(fd)
        checkpoint(f"{label}.synced")
        os.replace(tmp, path)
        checkpoint(f"{label}.renamed")
        fsync_directory(path.parent)
        checkpoint(f"{label}.durable")
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise VaultWriteError(path, error.strerror or str(error)) from None


def remove_file(path: Path, *, label: str, checkpoint: Checkpoint = no_checkpoint) -> None:
    """Delete ``path`` (if there) and make the deletion durable."""
    try:
        path.unlink(missing_ok=True)
        checkpoint(f"{label}.removed")
        fsync_directory(path.parent)
    except OSError as error:
        raise VaultWriteError(path, error.strerror or str(error)) from None


def remove_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files killed writers left in ``directory``; which ones."""
    removed = []
    for leftover in sorted(directory.glob(".*.tmp")):
        leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


@contextmanager
def directory_lock(directory: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold ``directory``'s flock: shared to read, exclusive to change what is in it.

    The kernel drops the lock when its holder dies, so a killed writer never wedges the
    vault; the next writer finds its temporary file and removes it.
    """
    fd = _open_directory(directory)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]
