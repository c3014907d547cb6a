"""Which model file this is: its sha256, computed once per file and remembered.

A saved conversation state is only valid for the exact model that made it
(DESIGN §3 puts the model's sha256 in its metadata). Hashing a multi-gigabyte
model on every start would cost seconds on an old machine, so the digest is
cached in the state directory, keyed by what changes when the file does
(device, inode, size, modification time).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from runa.splinfer.storage import Writer, atomic_write

CHUNK = 8 << 20


def _stamp(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def file_sha256(path: Path, progress: Callable[[], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress()
    return digest.hexdigest()


def model_sha256(path: Path, cache: Path, *, writer: Writer = atomic_write,
                 progress: Callable[[], None] | None = None) -> tuple[str, bool]:
    """(sha256 of ``path``, whether it came from ``cache``); the cache is updated if not.

    ``progress`` is called while hashing (a daemon pings its watchdog there). A
    cache that cannot be read or written only costs the hashing time.
    """
    path = path.resolve()
    stamp = _stamp(path)
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    entry = known.get(str(path))
    if isinstance(entry, dict) and entry.get("stamp") == stamp and entry.get("sha256"):
        return str(entry["sha256"]), True
    digest = file_sha256(path, progress)
    known[str(path)] = {"stamp": stamp, "sha256": digest}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        writer(cache, [json.dumps(known, indent=1, sort_keys=True).encode()])
    except OSError:
        pass
    return digest, False
