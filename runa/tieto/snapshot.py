"""Snapshot and restore of a topic with SQLite's online backup API.

A topic is one SQLite file (settings, texts, metadata, FTS5 and vec0 tables), so
a page-by-page backup is a complete, consistent copy even while the topic is
open and being read: ``sqlite3.Connection.backup`` copies the database as of one
read transaction. A restore checks that the snapshot is a tieto index before it
touches the topic, then copies it over the topic's file the same way, so a
restored topic answers exactly as the snapshot did.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from runa.tieto.errors import IndexCorruptError, TietoError
from runa.tieto.index import TopicIndex, connect

#: Pages copied per backup step (a step holds the source's read lock only briefly).
PAGES_PER_STEP = 1024


class SnapshotError(TietoError):
    """A snapshot that cannot be written or read; names the file."""

    exit_code = 74  # EX_IOERR


class SnapshotMissing(SnapshotError):
    """The snapshot file to restore does not exist: a name of nothing, as a missing topic."""

    exit_code = 66  # EX_NOINPUT


def snapshot(index: TopicIndex, dest: Path) -> int:
    """Copy ``index`` to ``dest`` (a new file, mode 0600); returns its size in bytes."""
    if dest.exists():
        raise SnapshotError(f"{dest}: exists already; choose a new file for the snapshot")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        target = sqlite3.connect(str(dest))
    except OSError as e:
        raise SnapshotError(f"{dest}: cannot write the snapshot: {e.strerror or e}") from None
    try:
        index.db.backup(target, pages=PAGES_PER_STEP)
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal
    except sqlite3.Error as e:
        target.close()
        dest.unlink(missing_ok=True)
        raise SnapshotError(f"{dest}: snapshot of topic {index.config.name!r} failed: {e}") \
            from None
    target.close()
    return dest.stat().st_size


def check_snapshot(source: Path) -> str:
    """The topic name a snapshot file holds; SnapshotError when it is not a tieto index."""
    if not source.is_file():
        raise SnapshotMissing(f"{source}: no such snapshot file")
    try:
        index = TopicIndex.open(source)
    except IndexCorruptError as e:
        raise SnapshotError(f"{source}: not a topic snapshot ({e})") from None
    try:
        return index.config.name
    finally:
        index.close()


def restore(source: Path, dest: Path, name: str | None = None) -> None:
    """Replace the topic file ``dest`` with the snapshot ``source`` (checked first).

    ``name`` is the topic it now is, recorded when the snapshot was taken of another
    one (so its errors name the right topic). ``dest`` must not be open in this process
    (the caller closes it); another process's readers see the restored content at
    their next transaction.
    """
    check_snapshot(source)
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not dest.exists():
        os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    src = connect(source)
    try:
        target = connect(dest)
        try:
            src.backup(target, pages=PAGES_PER_STEP)
            target.execute("PRAGMA journal_mode=WAL")
        finally:
            target.close()
    except sqlite3.Error as e:
        raise SnapshotError(f"restoring {source} into {dest} failed: {e}") from None
    finally:
        src.close()
    if name is not None:
        index = TopicIndex.open(dest)
        try:
            index.rename(name)
        finally:
            index.close()
