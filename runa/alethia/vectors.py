"""The encrypted vector file: each record's float vector in a fixed-size slot, read on demand.

The index (runa.alethia.index) holds only sign codes; the exact cosine over its few hundred
candidates needs their float vectors, and the index's build at start needs them all. Each
vector is sealed on its own, so row ``r`` is at a known offset and a search decrypts just
the rows it ranks::

    header (16 bytes): b"RUNAVEC1", dim (uint32 LE), 4 reserved zero bytes
    slot r at 16 + r * (24 + 4 dim + 16): nonce (24) ‖ XChaCha20-Poly1305(dim float32 LE)

The associated data is the row number (uint64 LE), so a slot moved to another row does not
open. A partial slot at the end (a write cut short) is not a row; the next append overwrites it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from runa.crypto import sodium
from runa.errors import RunaError

MAGIC = b"RUNAVEC1"
HEADER = struct.Struct("<8sI4x")
#: Rows decrypted per read when the whole file is read (the index's build at start).
BLOCK_ROWS = 4096


class VectorFileError(RunaError):
    """A vector file that cannot be read as one: names the file and row, never a value."""

    exit_code = 74  # EX_IOERR


class VectorFile:
    """Append and fetch float32 vectors of one dimension, each slot sealed under ``key``.

    ``key`` (32 bytes) stays the caller's: it is used, not copied, and the caller wipes it.
    """

    def __init__(self, path: Path | str, key: bytearray, dim: int = 384) -> None:
        self.path = Path(path)
        self.key = key
        self.dim = dim
        self.slot = sodium.NONCE_BYTES + 4 * dim + sodium.MAC_BYTES
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self.path, flags, 0o600)
        try:
            self._check_header()
        except BaseException:
            os.close(self._fd)
            raise

    def _check_header(self) -> None:
        head = os.pread(self._fd, HEADER.size, 0)
        if not head:
            os.pwrite(self._fd, HEADER.pack(MAGIC, self.dim), 0)
            return
        if len(head) < HEADER.size:
            raise VectorFileError(f"{self.path}: shorter than a vector file's header")
        magic, dim = HEADER.unpack(head)
        if magic != MAGIC:
            raise VectorFileError(f"{self.path}: not a vector file")
        if dim != self.dim:
            raise VectorFileError(f"{self.path}: holds {dim}-dimensional vectors, not {self.dim}")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> VectorFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return max(0, os.fstat(self._fd).st_size - HEADER.size) // self.slot

    def _offset(self, row: int) -> int:
        return HEADER.size + row * self.slot

    def append(self, vectors: np.ndarray) -> int:
        """Seal and write ``vectors`` (n x dim) after the last whole row; the first new row."""
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise VectorFileError(f"{self.path}: expected {self.dim}-dimensional vectors, "
                                  f"got shape {vectors.shape}")
        first = len(self)
        for start in range(0, len(vectors), BLOCK_ROWS):
            block = bytearray()
            for row, vector in enumerate(vectors[start:start + BLOCK_ROWS], first + start):
                nonce = sodium.random_bytes(sodium.NONCE_BYTES)
                block += nonce
                block += sodium.encrypt(self.key, nonce, vector.tobytes(), _associated(row))
            written = os.pwrite(self._fd, block, self._offset(first + start))
            if written != len(block):
                raise VectorFileError(f"{self.path}: short write at row {first + start}")
        return first

    def overwrite(self, row: int, vector: np.ndarray) -> None:
        """Seal ``vector`` into row ``row`` in place (forget writes a zero vector there, so
        the record's meaning does not stay in the file); the caller syncs."""
        vector = np.ascontiguousarray(vector, dtype="<f4").reshape(self.dim)
        if not 0 <= row < len(self):
            raise VectorFileError(f"{self.path}: no row {row} (it holds {len(self)})")
        nonce = sodium.random_bytes(sodium.NONCE_BYTES)
        slot = nonce + sodium.encrypt(self.key, nonce, vector.tobytes(), _associated(row))
        if os.pwrite(self._fd, slot, self._offset(row)) != len(slot):
            raise VectorFileError(f"{self.path}: short write at row {row}")

    def sync(self) -> None:
        os.fsync(self._fd)

    def fetch(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The vectors of ``rows``, in that order (len(rows) x dim float32)."""
        count = len(self)
        out = np.empty((len(rows), self.dim), dtype="<f4")
        for i, row in enumerate(rows):
            row = int(row)
            if not 0 <= row < count:
                raise VectorFileError(f"{self.path}: no row {row} (it holds {count})")
            self._open_into(os.pread(self._fd, self.slot, self._offset(row)), row, out[i])
        return out

    def blocks(self, block_rows: int = BLOCK_ROWS) -> Iterator[np.ndarray]:
        """Every vector in row order, ``block_rows`` at a time (one read a block)."""
        count = len(self)
        for first in range(0, count, block_rows):
            yield self.rows(first, min(block_rows, count - first))

    def rows(self, first: int, n: int) -> np.ndarray:
        """The vectors of rows ``first`` to ``first + n - 1`` (one read)."""
        data = os.pread(self._fd, n * self.slot, self._offset(first))
        out = np.empty((n, self.dim), dtype="<f4")
        view = memoryview(data)
        for i in range(n):
            self._open_into(view[i * self.slot:(i + 1) * self.slot], first + i, out[i])
        return out

    def read_all(self) -> np.ndarray:
        """Every vector (n x dim float32)."""
        return np.concatenate([np.empty((0, self.dim), np.float32), *self.blocks()])

    def _open_into(self, slot: bytes | memoryview, row: int, out: np.ndarray) -> None:
        if len(slot) != self.slot:
            raise VectorFileError(f"{self.path}: row {row} is cut short")
        view = memoryview(slot)
        if not sodium.decrypt_to(self.key, bytes(view[:sodium.NONCE_BYTES]),
                                 view[sodium.NONCE_BYTES:], _associated(row),
                                 out.data.cast("B")):
            raise VectorFileError(f"{self.path}: row {row} does not open: a wrong key, or "
                                  "the slot was altered or moved")


def _associated(row: int) -> bytes:
    return struct.pack("<Q", row)
