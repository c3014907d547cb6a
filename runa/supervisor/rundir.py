"""The supervisor's runtime directory, made private before anything is written to it.

It holds the notify socket, the state file (conversation ids, component status lines,
paths) and the log, so it must be this person's alone. Without ``XDG_RUNTIME_DIR`` it lives
under a world-writable ``/tmp``, where someone else may have created it first (to read what
is written there, or to plant a state file naming a process to signal). So every directory
Runa owns on the way is checked without following links: a directory of this uid, writable
by no one else. One that is only readable by others (as an earlier Runa made it) is closed
to 0700; anything else is refused, never used.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from runa.errors import RunaError
from runa.paths import Paths

EX_NOPERM = 77


class RuntimeDirError(RunaError):
    """The runtime directory is someone else's, or open to others: not safe to use."""

    exit_code = EX_NOPERM


def _owned(paths: Paths) -> list[Path]:
    """The directories Runa creates and must own, outermost first.

    A personal stack's fallback base (``$TMPDIR/runa-<uid>``) is Runa's too; a set
    ``XDG_RUNTIME_DIR`` is the login session's, checked by :func:`_check_base`.
    """
    base = paths.runtime.parent
    if paths.runtime_fallback:
        return [base, paths.runtime]
    return [paths.runtime]


def prepare(paths: Paths, uid: int | None = None) -> Path:
    """Create (0700) or check the runtime directory and return it; refuse an unsafe one."""
    uid = os.getuid() if uid is None else uid
    if not paths.runtime_fallback and not paths.shared:
        _check_base(paths.runtime.parent, uid)
    for directory in _owned(paths):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as error:
            raise RuntimeDirError(f"cannot create the runtime directory {directory}: "
                                  f"{error.strerror}") from error
        _check_private(directory, uid)
    return paths.runtime


def existing(paths: Paths, uid: int | None = None) -> bool:
    """Whether the runtime directory exists, after the same checks; never creates it.

    For the commands that only read (``status``) or signal (``down``): a directory that is
    not safe is refused rather than trusted.
    """
    uid = os.getuid() if uid is None else uid
    for directory in _owned(paths):
        if not os.path.lexists(directory):
            return False
        _check_private(directory, uid)
    return True


def _check_base(base: Path, uid: int) -> None:
    """``XDG_RUNTIME_DIR`` must be this person's and writable by no one else (XDG spec)."""
    try:
        info = base.stat()
    except OSError as error:
        raise RuntimeDirError(f"XDG_RUNTIME_DIR={base} cannot be used: {error.strerror}; "
                              "set it to a directory of yours with mode 0700, or unset it") \
            from error
    if info.st_uid != uid or info.st_mode & 0o022 or not stat.S_ISDIR(info.st_mode):
        raise RuntimeDirError(
            f"XDG_RUNTIME_DIR={base} is {_describe(info)}, not a directory of yours (uid "
            f"{uid}) that only you can write: refusing to use it; set it to a directory "
            "with mode 0700, or unset it")


def _check_private(directory: Path, uid: int) -> None:
    """A real directory of ``uid`` that no one else can write; read access is closed."""
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o022:
        raise RuntimeDirError(
            f"the runtime directory {directory} is {_describe(info)}, not a directory of "
            f"yours (uid {uid}) that only you can write: refusing to use it; remove it (or "
            "set XDG_RUNTIME_DIR to a private directory) and try again")
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700, follow_symlinks=False)


def _describe(info: os.stat_result) -> str:
    kind = ("a symbolic link" if stat.S_ISLNK(info.st_mode)
            else "a directory" if stat.S_ISDIR(info.st_mode) else "not a directory")
    return f"{kind} owned by uid {info.st_uid} with mode {stat.S_IMODE(info.st_mode):04o}"


def open_private(path: Path) -> int:
    """Open ``path`` for appending as a 0600 file (closing an older, wider one); an fd.

    ``O_NOFOLLOW``: a link planted in place of the log is refused, not written through.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    os.fchmod(fd, 0o600)
    return fd
