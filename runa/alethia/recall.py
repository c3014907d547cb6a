"""The search index over the store: each record's embedding sealed on disk, the binary index
in RAM (docs/alethia-index.md).

In the store's root (``runa.alethia.layout``):

- ``vectors.key``: a random 32-byte data key, wrapped by the current memory key exactly as a
  day's key is (``runa.alethia.keyfile``, its "day" is ``vectors``); ``rotate_key`` re-wraps it;
- ``vectors.bin``: the vectors, each sealed under that key in its row (``VectorFile``);
- ``vectors.rows``: per row, the record's id (int64, ``encode_id``) and the first
  8 bytes (``store.HASH_PREFIX``) of its hash in the chain, in the clear as the day files have them,
  so a row whose record was forgotten or is another record now (a restored store) is
  never used, and is zeroed at the next build;
- ``vectors.json``: the embedding model the vectors were made with; another model's
  vectors are dropped and every record embedded again.

The index holds sign codes with raw signs (no centre, unit scale), so a record's code is a
function of its vector alone: the index rebuilt at start is the one a search used before.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

import numpy as np

from runa.alethia import files, keyfile, layout
from runa.alethia.errors import StoreError
from runa.alethia.index import SHORTLIST, BinaryIndex
from runa.alethia.model import Keys, Record
from runa.alethia.vectors import BLOCK_ROWS, HEADER, VectorFile
from runa.crypto import sodium

#: A row of ``vectors.rows``: the record's id and its hash's first bytes.
ROW = struct.Struct("<q8s")
_EPOCH = date(1970, 1, 1)


class RecallStore(Protocol):
    """What the index needs of the store (``runa.alethia.store.Store``)."""

    def live_ids(self) -> Iterator[str]: ...

    def record_hash(self, record_id: str) -> bytes | None: ...

    def read(self, record_id: str) -> Record: ...


def encode_id(record_id: str) -> int:
    """``YYYY-MM-DD/N`` as an int64: the day's number since 1970 above, N below 32 bits."""
    day, _, index = record_id.partition("/")
    return (date.fromisoformat(day) - _EPOCH).days << 32 | int(index)


def decode_id(code: int) -> str:
    return f"{date.fromordinal(_EPOCH.toordinal() + (code >> 32)).isoformat()}/{code & 0xFFFFFFFF}"


def day_code(day: str) -> int:
    """The smallest code of a record of ``day`` (``since`` compares codes with it)."""
    return (date.fromisoformat(day) - _EPOCH).days << 32


def text_of(record: Record) -> str:
    """What is embedded of a record: a turn's question and answer, a passage's title and text."""
    body = record.body
    if record.entry.kind == "document":
        return f"{body.get('title') or ''}\n{body.get('text') or ''}"
    return f"{body.get('user') or ''}\n{body.get('answer') or ''}"


@dataclass(frozen=True)
class Found:
    """A row the index ranked: the record's id and the exact cosine similarity."""

    id: str
    score: float


class Recall:
    """The vectors, their rows and the index of one store, open with the store's keys."""

    def __init__(self, root: Path, key: bytearray, vectors: VectorFile, rows: int,
                 model_id: str) -> None:
        self.root = root
        self.key = key
        self.vectors = vectors
        self.model_id = model_id
        self.index = BinaryIndex(dim=vectors.dim, capacity=rows)
        self.dead: set[int] = set()  # rows never to be used: forgotten or another record
        self._rows_fd = os.open(root / layout.ROWS, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                0o600)
        self._on_disk = rows  # rows in both files
        self._built = 0  # rows of the files in the index so far

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def open(cls, root: Path, keys: Keys, *, model_id: str, dim: int) -> Recall:
        """Open (or create) the index's files for vectors of ``model_id``; ``WrongKey`` if
        ``keys`` do not open the vectors' key. Rows from another model are dropped."""
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        meta = root / layout.VECTORS_META
        wanted = {"model_id": model_id, "dim": dim}
        try:
            known = json.loads(meta.read_text()) if meta.exists() else None
        except ValueError:
            known = None
        if known != wanted:
            for name in (layout.VECTORS, layout.ROWS):
                (root / name).unlink(missing_ok=True)
            files.replace(meta, json.dumps(wanted).encode() + b"\n")
        key = cls._key(root, keys)
        try:
            rows = _align(root, dim)
            vectors = VectorFile(root / layout.VECTORS, key, dim)
        except BaseException:
            sodium.wipe(key)
            raise
        return cls(root, key, vectors, rows, model_id)

    @staticmethod
    def _key(root: Path, keys: Keys) -> bytearray:
        path = root / layout.VECTORS_KEY
        if path.exists():
            return keyfile.unwrap(path, keys)[0]
        for name in (layout.VECTORS, layout.ROWS):  # sealed under a key that is gone
            (root / name).unlink(missing_ok=True)
        version = max(keys.memory)
        key = sodium.new_key()
        files.replace(path, keyfile.wrap(path.stem, version, key, keys.memory[version]))
        return key

    def build(self, store: RecallStore, rows: int = BLOCK_ROWS) -> bool:
        """Put the next ``rows`` rows of the files into the index (True once all are in).
        A row whose record is not the store's live record of that id is zeroed on disk and
        never used."""
        if self._built >= self._on_disk:
            return True
        first = self._built
        count = min(rows, self._on_disk - first)
        vectors = self.vectors.rows(first, count)
        codes, hashes = self._read_rows(first, count)
        stale = [first + i for i in range(count)
                 if _hash_of(store, int(codes[i])) != hashes[i]]
        self.index.append(vectors, codes)
        self._built = first + count
        if stale:
            self._zero(stale)
        return self._built >= self._on_disk

    @property
    def ready(self) -> bool:
        return self._built >= self._on_disk

    def __len__(self) -> int:
        """Rows in the index that name a live record."""
        return len(self.index) - len(self.dead)

    def missing(self, store: RecallStore) -> list[str]:
        """The store's live records the index has no row for (to be embedded)."""
        return [i for chunk in self.missing_steps(store) for i in chunk]

    def missing_steps(self, store: RecallStore, rows: int = 1 << 14) -> Iterator[list[str]]:
        """``missing`` in pieces of ``rows`` live records (a step of the daemon's loop each),
        against the ids the index holds, sorted once."""
        kept = np.ones(len(self.index), dtype=bool)
        kept[list(self.dead)] = False
        have = np.sort(self.index.ids[kept])
        days: dict[str, int] = {}
        live = store.live_ids()
        while chunk := list(itertools.islice(live, rows)):
            codes = np.fromiter((_code(i, days) for i in chunk), dtype=np.int64,
                                count=len(chunk))
            at = np.searchsorted(have, codes)
            found = have[np.minimum(at, len(have) - 1)] == codes if len(have) else \
                np.zeros(len(codes), dtype=bool)
            yield [chunk[i] for i in np.flatnonzero(~found)]

    # -- changing -----------------------------------------------------------------------

    def add(self, ids: Sequence[str], hashes: Sequence[bytes], vectors: np.ndarray) -> None:
        """Append the records' vectors and rows, fsynced, and index them."""
        if not self.ready:
            raise StoreError("the search index is still being built")
        codes = np.array([encode_id(i) for i in ids], dtype=np.int64)
        first = self.vectors.append(vectors)
        if first != self._on_disk:
            raise StoreError(f"{self.vectors.path}: holds {first} rows, the row table "
                             f"{self._on_disk}")
        rows = b"".join(ROW.pack(int(c), h) for c, h in zip(codes, hashes, strict=True))
        os.pwrite(self._rows_fd, rows, first * ROW.size)
        self.vectors.sync()
        os.fsync(self._rows_fd)
        self._on_disk = self._built = first + len(codes)
        self.index.append(vectors, codes)

    def forget(self, ids: Sequence[str]) -> int:
        """Zero the rows of these records on disk (fsynced) and drop them; how many."""
        rows = np.flatnonzero(np.isin(self.index.ids,
                                      np.array([encode_id(i) for i in ids], dtype=np.int64)))
        self._zero([int(row) for row in rows])
        return len(rows)

    def _zero(self, rows: list[int]) -> None:
        zero = np.zeros(self.vectors.dim, dtype=np.float32)
        for row in rows:
            self.vectors.overwrite(row, zero)
        if rows:
            self.vectors.sync()
        self.dead.update(rows)

    # -- searching ----------------------------------------------------------------------

    def search(self, query: np.ndarray, count: int = SHORTLIST, *,
               since_day: str | None = None) -> list[Found]:
        """Up to ``count`` records nearest ``query`` by exact cosine, best first (records of
        ``since_day`` or later when given); the caller filters them further."""
        if not len(self.index):
            return []
        mask = np.ones(len(self.index), dtype=bool)
        mask[list(self.dead)] = False
        if since_day is not None:
            mask &= self.index.ids >= day_code(since_day)
        hits = self.index.search(query, count, self.vectors.fetch, mask=mask)
        return [Found(decode_id(hit.id), hit.score) for hit in hits]

    def _read_rows(self, first: int, count: int) -> tuple[np.ndarray, list[bytes]]:
        data = os.pread(self._rows_fd, count * ROW.size, first * ROW.size)
        table = np.frombuffer(data, dtype=np.dtype([("id", "<i8"), ("hash", "S8")]))
        return table["id"].astype(np.int64), [bytes(h).ljust(8, b"\0") for h in table["hash"]]

    def close(self) -> None:
        self.vectors.close()
        if self._rows_fd >= 0:
            os.close(self._rows_fd)
            self._rows_fd = -1
        sodium.wipe(self.key)


def _code(record_id: str, days: dict[str, int]) -> int:
    """``encode_id`` with the days' codes kept (a build reads millions of one few days)."""
    day, _, index = record_id.partition("/")
    code = days.get(day)
    if code is None:
        code = days[day] = day_code(day)
    return code | int(index)


def _hash_of(store: RecallStore, code: int) -> bytes | None:
    """The store's hash of the record a row names (None: no such live record, or a row
    whose id is no date at all)."""
    try:
        record_id = decode_id(code)
    except (ValueError, OverflowError):
        return None
    return store.record_hash(record_id)


def rotate_key(root: Path, keys: Keys, version: int) -> None:
    """Re-wrap the vectors' key (if there is one) under ``keys.memory[version]``, with or
    without the index open: ``rotate-key`` then removes the older memory keys from coven.
    A key that no given version opens is removed with the vectors it sealed (they are
    embedded again) rather than leaving a file that names a version coven may drop."""
    path = root / layout.VECTORS_KEY
    if not path.exists():
        return
    try:
        key, _old = keyfile.unwrap(path, keys)
    except StoreError:
        for name in (layout.VECTORS, layout.ROWS, layout.VECTORS_KEY):
            (root / name).unlink(missing_ok=True)
        return
    try:
        files.replace(path, keyfile.wrap(path.stem, version, key, keys.memory[version]))
    finally:
        sodium.wipe(key)


def _align(root: Path, dim: int) -> int:
    """The rows both files hold whole; a longer tail of either (a crash between the two
    writes) is cut, so the next append goes on from the same row in both."""
    vectors, rows = root / layout.VECTORS, root / layout.ROWS
    slot = sodium.NONCE_BYTES + 4 * dim + sodium.MAC_BYTES
    header = HEADER.size
    in_vectors = max(0, vectors.stat().st_size - header) // slot if vectors.exists() else 0
    in_rows = rows.stat().st_size // ROW.size if rows.exists() else 0
    count = min(in_vectors, in_rows)
    if vectors.exists() and vectors.stat().st_size > header + count * slot:
        os.truncate(vectors, header + count * slot)
    if rows.exists() and rows.stat().st_size > count * ROW.size:
        os.truncate(rows, count * ROW.size)
    return count
