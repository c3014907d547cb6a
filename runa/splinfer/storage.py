"""Writing files so that a crash or a full disk never leaves a broken one behind.

Every file splinfer keeps (conversation histories, saved model states, the
model-identity cache) is written the same way: into a temporary file next to
the target, its space reserved up front (so a full disk fails before any byte
is written, where the filesystem can tell), fsynced, then renamed over the
target and the directory fsynced. Whoever reads the target sees the old file
or the new one, never half of one; when writing fails the old file stays.

``Writer`` is the seam: tests pass a writer that fails like a full disk.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

Chunk = bytes | bytearray | memoryview


class Writer(Protocol):
    """Replace ``path`` with ``chunks`` atomically, or raise OSError leaving it as it was."""

    def __call__(self, path: Path, chunks: Iterable[Chunk], *, size: int | None = None) -> None:
        ...


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, chunk: Chunk) -> None:
    view = memoryview(chunk).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(path: Path, chunks: Iterable[Chunk], *, size: int | None = None,
                 mode: int = 0o600) -> None:
    """Write ``chunks`` to ``path`` via a temporary file, fsync and rename (see module doc).

    ``size`` (the total, when known) is reserved with ``posix_fallocate`` first.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        if size:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as error:
                if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
        for chunk in chunks:
            _write_all(fd, chunk)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_temporaries(directory: Path) -> int:
    """Delete temporary files a crashed writer left in ``directory``; how many."""
    count = 0
    for leftover in directory.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
        count += 1
    return count
