"""Segment files: naming, creation with reserved pages, opening with validation.

A segment is one file (normally in /dev/shm) mapped shared by every process of a stack. Creation
builds the whole segment under a temporary name, reserves its pages with ``posix_fallocate`` (so a
full tmpfs fails here, loudly, instead of raising SIGBUS in some reader later) and then ``link``s it
into place, which fails if a segment already exists: a live segment is never truncated or
re-initialised, and nobody can open a half-written one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import re
import time
from dataclasses import dataclass

from runa.splinter.errors import (
    BadMagic,
    GeometryError,
    NoSpace,
    SegmentCorrupt,
    SegmentError,
    SegmentExists,
    SegmentNotFound,
    SegmentSizeError,
    VersionMismatch,
)
from runa.splinter.layout import (
    HEADER,
    HEADER_SIZE,
    LAYOUT_VERSION,
    MAGIC,
    MUTEX_SIZE,
    Geometry,
    HeaderInfo,
    Layout,
    unpack_header,
)
from runa.splinter.locks import init_mutexes

DEFAULT_DIR = "/dev/shm"
BUSES = ("main", "coven", "alethia")
# Stack and bus names become file names (/dev/shm/runa-<stack>-<bus>, and for a stack also
# cgroups and the runtime directory): one rule for the library and the CLI (runa.paths),
# starting with a letter or digit so that no name is "." or "..", hidden, or taken for an option.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: The rule in words, for the messages that refuse a name.
NAME_FORM = "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"


def is_name(value: str) -> bool:
    """Whether ``value`` may name a stack or a bus (see ``NAME_FORM``)."""
    return _NAME.fullmatch(value) is not None


def segment_path(stack: str, bus: str, directory: str = DEFAULT_DIR) -> str:
    """``<directory>/runa-<stack>-<bus>``; stack and bus are checked so no path can escape."""
    for what, value in (("stack", stack), ("bus", bus)):
        if not is_name(value):
            raise SegmentError(os.path.join(directory, f"runa-{stack}-{bus}"),
                               f"bad {what} name {value!r} (use {NAME_FORM})")
    return os.path.join(directory, f"runa-{stack}-{bus}")


def _free_bytes(directory: str) -> int:
    try:
        st = os.statvfs(directory)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize


def create_segment(
    path: str,
    geometry: Geometry | None = None,
    *,
    mode: int = 0o600,
    gid: int | None = None,
) -> None:
    """Create and initialise a segment at ``path``.

    Raises SegmentExists if anything is already there (use ``ensure_segment`` for
    "create unless a valid one exists"), NoSpace if the filesystem cannot hold it.
    """
    layout = Layout(geometry or Geometry())
    directory = os.path.dirname(path) or "."
    if os.path.lexists(path):
        raise SegmentExists(path, "a segment already exists; refusing to re-create it")
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{time.time_ns()}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what config asked for
        if gid is not None:
            os.fchown(fd, -1, gid)
        try:
            os.posix_fallocate(fd, 0, layout.total_size)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                os.ftruncate(fd, 0)  # give the pages back before measuring what is free
                raise NoSpace(path, layout.total_size, _free_bytes(directory)) from e
            raise SegmentError(path, f"cannot reserve {layout.total_size} bytes: {e}") from e
        # Pages come back zeroed: every slot is EMPTY, every channel FREE. The mutexes and the
        # header (magic included) are written before the file becomes visible under its name.
        _init_locks(fd, layout)
        os.pwrite(fd, layout.pack_header(time.time_ns(), os.getpid()), 0)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise SegmentExists(path, "a segment appeared while this one was being built") from None
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _init_locks(fd: int, layout: Layout) -> None:
    size = layout.lock_count * MUTEX_SIZE
    with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                   offset=layout.locks_off) as mm:
        anchor = (ctypes.c_char * 1).from_buffer(mm)
        address = ctypes.addressof(anchor)
        del anchor
        init_mutexes(address, layout.lock_count)


def remove_segment(path: str) -> bool:
    """Unlink a segment file (mapped processes keep their mapping); True if one was removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def read_header(path: str, fd: int, size: int) -> HeaderInfo:
    """Validate magic, version and size of an open segment file; each failure has its own error."""
    raw = os.pread(fd, HEADER.size, 0)
    if len(raw) < len(MAGIC) or raw[: len(MAGIC)] != MAGIC:
        raise BadMagic(path, f"not a splinter segment (first bytes {raw[:8]!r}, want {MAGIC!r})")
    if len(raw) < HEADER.size:
        raise SegmentSizeError(path, size, HEADER_SIZE)
    info = unpack_header(raw)
    if info.version != LAYOUT_VERSION:
        raise VersionMismatch(path, info.version, LAYOUT_VERSION)
    try:
        layout = Layout(info.geometry)
    except GeometryError as e:
        raise SegmentCorrupt(path, f"header geometry is invalid: {e}") from e
    offsets = (info.header_size, info.slots_off, info.chans_off, info.stats_off, info.locks_off)
    expected = (
        HEADER_SIZE, layout.slots_off, layout.chans_off, layout.stats_off, layout.locks_off,
    )
    if layout.total_size != info.total_size or offsets != expected:
        raise SegmentCorrupt(
            path,
            f"header declares {info.total_size} bytes / offsets {offsets}, but its geometry "
            f"gives {layout.total_size} bytes / offsets {expected}",
        )
    if size != info.total_size:
        raise SegmentSizeError(path, size, info.total_size)
    return info


@dataclass(frozen=True)
class _Mapping:
    fd: int
    mm: mmap.mmap
    base: int  # virtual address of byte 0 (for futex calls)


class Segment:
    """An open, validated, mapped segment: the fd (for locks), the map and word views.

    ``words`` is the whole map viewed as u64 (index = byte offset // 8); ``mm`` gives byte
    slices. Close with ``close()`` or use as a context manager.
    """

    def __init__(self, path: str, fd: int, info: HeaderInfo) -> None:
        self.path = path
        self.info = info
        self.geometry = info.geometry
        self.layout = Layout(info.geometry)
        self.fd = fd
        self.mm = mmap.mmap(fd, info.total_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._view = memoryview(self.mm)
        self.words = self._view.cast("Q")
        anchor = (ctypes.c_char * 1).from_buffer(self.mm)
        self.base_address = ctypes.addressof(anchor)
        del anchor  # release the buffer export so the map can be closed later
        self.closed = False

    def check_size(self) -> None:
        """Raise SegmentSizeError if the file is no longer as long as its mapping.

        Someone with write access may truncate the file under a mapping; touching a page past
        the new end raises SIGBUS, which kills the process. Long-lived users (the keeper) call
        this before each pass over the segment, so a cut-short file is an error, not a crash.
        """
        size = os.fstat(self.fd).st_size
        if size != self.info.total_size:
            raise SegmentSizeError(self.path, size, self.info.total_size)

    @classmethod
    def open(cls, path: str) -> Segment:
        """Open and validate an existing segment (BadMagic / VersionMismatch / SegmentSizeError)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SegmentNotFound(path, "no such segment (is the bus created?)") from None
        except OSError as e:
            raise SegmentError(path, f"cannot open: {e.strerror}") from e
        try:
            info = read_header(path, fd, os.fstat(fd).st_size)
            return cls(path, fd, info)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.words.release()
        self._view.release()
        self.mm.close()
        os.close(self.fd)

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ensure_segment(
    path: str,
    geometry: Geometry | None = None,
    *,
    mode: int = 0o600,
    gid: int | None = None,
) -> bool:
    """Create the segment unless a valid one exists; True if created.

    An existing segment is validated and left untouched (its data included); if its geometry
    differs from the one asked for, SegmentError says so rather than guessing.
    """
    g = geometry or Geometry()
    try:
        create_segment(path, g, mode=mode, gid=gid)
        return True
    except SegmentExists:
        pass
    with Segment.open(path) as seg:
        if seg.geometry != g:
            raise SegmentError(
                path, f"exists with geometry {seg.geometry}, not {g}; remove it to change it"
            )
    return False
