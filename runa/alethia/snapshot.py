"""Snapshots of the store: a consistent copy taken while the daemon writes, and restoring
one in place of the store once it verifies against the store's key."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import io
import os
import shutil
import tarfile
from collections.abc import Collection
from pathlib import Path

from runa.alethia import dayfile, files, keyfile, layout
from runa.alethia.errors import KeyMissing, StoreError
from runa.alethia.layout import DAYS, META
from runa.alethia.model import Report
from runa.alethia.verify import verify


def _signed_lines(path: Path) -> bytes:
    """The file's lines up to its last signature line, as of now: a batch being written (or
    a torn tail) is left out."""
    with path.open("rb") as handle:
        data = handle.read(os.fstat(handle.fileno()).st_size)
    return data[:dayfile.scan(data).signed_end()]


def snapshot(root: Path, target: Path) -> None:
    """Copy the store (as encrypted as it is) to the new file ``target``, consistently.

    A tar of ``alethia.json`` and the day files, readable while the daemon writes: the logs
    are listed before the key files (a day starts with its key), a log without its key is
    left out, key files are replaced whole, and each log is taken up to its last signature
    line (day files only grow between atomic replaces), so the copy is the store as it was
    at one moment per day, each day ending signed.
    """
    if layout.read_public_key(root) is None:
        raise StoreError(f"{root}: no alethia store here ({META} is missing)")
    if target.exists():
        raise StoreError(f"{target}: exists; a snapshot goes to a new file")
    logs = sorted((root / DAYS).glob("*.log"))
    keys = {path.stem: path.read_bytes() for path in sorted((root / DAYS).glob("*.key"))}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        members = [(META, (root / META).read_bytes())]
        members += [(f"{DAYS}/{name}.key", data) for name, data in keys.items()]
        signed = [(f"{DAYS}/{path.name}", _signed_lines(path)) for path in logs
                  if path.stem in keys]
        members += [(name, data) for name, data in signed if data]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    target.parent.mkdir(parents=True, exist_ok=True)
    files.replace(target, buffer.getvalue())


def _extract(source: Path, into: Path) -> None:
    try:
        with tarfile.open(source, mode="r:") as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                allowed = (member.name == META or (
                    len(parts) == 2 and parts[0] == DAYS and not parts[1].startswith(".")
                    and parts[1].endswith((".key", ".log"))))
                handle = tar.extractfile(member) if member.isfile() else None
                if not allowed or handle is None:
                    raise StoreError(f"{source}: {member.name!r} is not part of a snapshot")
                path = into / member.name
                path.parent.mkdir(mode=0o700, exist_ok=True)
                files.replace(path, handle.read())
    except (tarfile.TarError, OSError) as error:
        raise StoreError(f"{source}: not a readable snapshot ({error})") from None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically (renameat2 RENAME_EXCHANGE); False where unsupported."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(a))


def restore(source: Path, root: Path, public_key: bytes | None = None,
            key_versions: Collection[int] | None = None) -> Report:
    """Check that ``source`` is a snapshot of this store that verifies, then replace the
    store with it atomically; the report of the restored store.

    The key trusted is ``public_key`` (``public_key_of`` the seed) or else the current
    store's: a snapshot of another store (``StoreError``) replaces nothing. The replaced
    store is kept beside it (``.<name>.old``) until ``Store.open`` opens the restored one.
    The store must not be open (its lock is taken, ``StoreError`` if held): the daemon
    closes it first and opens the restored one after. ``key_versions``, the memory-key
    versions coven holds: a snapshot whose day keys name another (one ``rotate-key`` removed)
    could not be opened, so it is refused (``KeyMissing``) before anything is replaced.
    """
    staging = root.with_name(f".{root.name}.restore.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / DAYS).mkdir(parents=True, mode=0o700)
    lock: int | None = None
    try:
        _extract(source, staging)
        trusted = public_key if public_key is not None else layout.read_public_key(root)
        report = verify(staging, trusted)
        if any(problem.kind == "public_key" for problem in report.problems):
            raise StoreError(f"{source}: a snapshot of another store (its public key is not "
                             f"this store's); nothing was replaced")
        if not report.ok:
            raise StoreError(f"{source}: the snapshot does not verify ({len(report.problems)} "
                             f"problems; the first: day {report.problems[0].day}, "
                             f"{report.problems[0].kind})")
        missing = sorted(set(keyfile.versions(staging)) - set(key_versions or ())
                         ) if key_versions is not None else []
        if missing:
            raise KeyMissing(f"{source}: its days are wrapped under memory key version(s) "
                             f"{', '.join(map(str, missing))}, which coven no longer holds "
                             f"(rotate-key removed them); nothing was replaced")
        files.fsync_directory(staging / DAYS)
        files.fsync_directory(staging)
        if root.exists():
            lock = files.lock(root)
            shutil.rmtree(layout.old(root), ignore_errors=True)
            if _exchange(staging, root):
                os.rename(staging, layout.old(root))
            else:
                os.rename(root, layout.old(root))
                os.rename(staging, root)
        else:
            os.rename(staging, root)
        files.fsync_directory(root.parent)
        return report
    finally:
        if lock is not None:
            os.close(lock)
        shutil.rmtree(staging, ignore_errors=True)
