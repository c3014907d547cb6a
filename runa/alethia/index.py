"""alethia's in-RAM search index: 48-byte sign codes and an id a record, no floats.

Each 384-dimensional embedding is stored as the signs of ``vector - center`` (one bit a
dimension, 48 bytes) beside its record id (an int64): 56 bytes a record, so 4M records fit
in 224 MiB. ``center`` is zero (raw signs) or the mean of the first records; the bench
measured both on real embeddings (docs/bench.md, "Memory index") and they came out alike.

A search is three steps. The Hamming distance from the query's code to every code (the C
scan in ``_popcount`` where it was built, else numpy) picks the ``candidates`` nearest; an
estimate of each one's similarity from its code and the float query keeps a ``shortlist``;
their float vectors, which the index never holds, come from ``fetch(rows)`` (in alethia,
decrypted on demand from the vector file) and exact cosine ranks them. With at least as
many candidates as records and no shortlist the result is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    from runa.alethia import _popcount
except ImportError:  # built without a C compiler: the numpy path does the same
    _popcount = None  # type: ignore[assignment]

DIM = 384
#: Candidates the Hamming scan keeps, and how many of them the estimate from their codes
#: passes on to exact cosine (whose vectors are fetched); chosen on the tune queries
#: (docs/bench.md, "Memory index").
CANDIDATES = 2000
SHORTLIST = 750
#: Whether a build centres the codes on the records' mean. alethia uses raw signs: its
#: codes then do not depend on which records came first, so a rebuild after a restart gives
#: the same codes and the same results; on the bench's real embeddings centred and raw
#: signs came out within the tune set's noise.
CENTERED = False
#: Rows the numpy scan handles at once (bounds its temporaries to a few MiB).
CHUNK_ROWS = 1 << 16
#: Records whose mean is the center of a build from blocks (the first ones stored).
CENTER_ROWS = 1 << 16
#: Growth factor of the code and id arrays when appends outgrow them.
GROWTH = 1.25

Fetch = Callable[[np.ndarray], np.ndarray]

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


class IndexInputError(ValueError):
    """Vectors or a query the index cannot take (wrong shape, ids and vectors disagree)."""


@dataclass(frozen=True)
class Hit:
    """One match: the record's id, its row in the index, and the cosine similarity."""

    id: int
    row: int
    score: float


def native_available() -> bool:
    """Is the C Hamming scan built?"""
    return _popcount is not None


def popcount64(words: np.ndarray) -> np.ndarray:
    """The set bits of each uint64 (numpy 1.24 has no ``bitwise_count``): SWAR, in place."""
    x = words
    x -= (x >> np.uint64(1)) & _M1
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    x *= _H01
    x >>= np.uint64(56)
    return x


def hamming_numpy(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """uint16 Hamming distance from ``query`` (w uint64) to each row of ``codes`` (n x w)."""
    n = codes.shape[0]
    out = np.empty(n, dtype=np.uint16)
    for start in range(0, n, CHUNK_ROWS):
        block = np.bitwise_xor(codes[start:start + CHUNK_ROWS], query)
        out[start:start + len(block)] = popcount64(block).sum(axis=1, dtype=np.uint16)
    return out


def hamming_native(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The same distances from the C scan (``__builtin_popcountll``, the GIL released)."""
    if _popcount is None:
        raise RuntimeError("the C scan _popcount is not built")
    out = np.empty(codes.shape[0], dtype=np.uint16)
    _popcount.hamming(np.ascontiguousarray(codes).data, np.ascontiguousarray(query).data,
                      out.data)
    return out


def nearest_rows(distances: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` rows of smallest distance, ties to the lower row; sorted by row.

    A counting selection (distances are small integers): the cutoff distance from a
    histogram, every row below it and the first rows at it. Deterministic, so the numpy
    and C scans pick the same rows.
    """
    if count >= len(distances):
        return np.arange(len(distances), dtype=np.int64)
    histogram = np.bincount(distances)
    cutoff = int(np.searchsorted(np.cumsum(histogram), count))  # first d with cum ≥ count
    below = np.flatnonzero(distances < cutoff)
    at = np.flatnonzero(distances == cutoff)[:count - len(below)]
    return np.sort(np.concatenate([below, at]))


class BinaryIndex:
    """Sign codes and ids in two growing arrays; search by Hamming, then exact cosine."""

    def __init__(self, center: np.ndarray | None = None, *, scale: np.ndarray | None = None,
                 dim: int = DIM, capacity: int = 0, native: bool = True) -> None:
        if dim % 64:
            raise IndexInputError(f"the code of {dim} dimensions is not whole uint64 words")
        self.dim = dim
        self.center = (np.zeros(dim, dtype=np.float32) if center is None
                       else np.asarray(center, dtype=np.float32).reshape(dim).copy())
        self.scale = (np.ones(dim, dtype=np.float32) if scale is None
                      else np.asarray(scale, dtype=np.float32).reshape(dim).copy())
        self.native = native and _popcount is not None
        self._codes = np.zeros((capacity, dim // 64), dtype=np.uint64)
        self._ids = np.zeros(capacity, dtype=np.int64)
        self._count = 0

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray | Sequence[int] | None = None, *,
              centered: bool = CENTERED, native: bool = True) -> BinaryIndex:
        """An index of ``vectors`` (rows 0..n-1), centred (if so) as :meth:`from_blocks`."""
        vectors = np.asarray(vectors, dtype=np.float32)
        center, scale = _center_and_scale(vectors[:CENTER_ROWS], centered)
        index = cls(center, scale=scale, dim=vectors.shape[1], capacity=len(vectors),
                    native=native)
        index.append(vectors, ids)
        return index

    @classmethod
    def from_blocks(cls, blocks: Iterable[np.ndarray], *, capacity: int = 0,
                    centered: bool = CENTERED, native: bool = True, dim: int = DIM
                    ) -> BinaryIndex:
        """An index of the vectors ``blocks`` yields in row order (the build at start, from
        the vector file). ``center`` (when centred) and ``scale`` come from the first
        CENTER_ROWS, so the same records give the same codes on every rebuild."""
        blocks = iter(blocks)
        head: list[np.ndarray] = []
        rows = 0
        for block in blocks:
            head.append(np.asarray(block, dtype=np.float32))
            rows += len(block)
            if rows >= CENTER_ROWS:
                break
        first = np.concatenate(head) if head else np.zeros((0, dim), np.float32)
        center, scale = _center_and_scale(first[:CENTER_ROWS], centered)
        index = cls(center, scale=scale, dim=first.shape[1] if len(first) else dim,
                    capacity=capacity, native=native)
        index.append(first)
        del head, first
        for block in blocks:
            index.append(block)
        return index

    def __len__(self) -> int:
        return self._count

    @property
    def codes(self) -> np.ndarray:
        """The codes of the records, n x (dim / 64) uint64 (a view, not a copy)."""
        return self._codes[:self._count]

    @property
    def ids(self) -> np.ndarray:
        return self._ids[:self._count]

    @property
    def nbytes(self) -> int:
        """Bytes the arrays hold, spare capacity included."""
        return int(self._codes.nbytes + self._ids.nbytes + self.center.nbytes
                   + self.scale.nbytes)

    def quantize(self, vectors: np.ndarray) -> np.ndarray:
        """Each row's signs about ``center`` as uint64 words (bit i set: dim i above it)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise IndexInputError(f"expected vectors of {self.dim} dimensions, got shape "
                              f"{vectors.shape}")
        bits = np.packbits(vectors > self.center, axis=1, bitorder="little")
        return bits.view("<u8")

    def append(self, vectors: np.ndarray, ids: np.ndarray | Sequence[int] | None = None
               ) -> int:
        """Add records (their ids default to their rows); the first new row."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        first = self._count
        n = len(vectors)
        ids_array = (np.arange(first, first + n, dtype=np.int64) if ids is None
                     else np.asarray(ids, dtype=np.int64).reshape(-1))
        if len(ids_array) != n:
            raise IndexInputError(f"{n} vectors but {len(ids_array)} ids")
        self._reserve(first + n)
        for start in range(0, n, CHUNK_ROWS):  # bound the boolean temporaries
            block = vectors[start:start + CHUNK_ROWS]
            self._codes[first + start:first + start + len(block)] = self.quantize(block)
        self._ids[first:first + n] = ids_array
        self._count = first + n
        return first

    def _reserve(self, needed: int) -> None:
        if needed <= len(self._codes):
            return
        capacity = max(needed, int(len(self._codes) * GROWTH) + 1024)
        codes = np.zeros((capacity, self._codes.shape[1]), dtype=np.uint64)
        codes[:self._count] = self._codes[:self._count]
        ids = np.zeros(capacity, dtype=np.int64)
        ids[:self._count] = self._ids[:self._count]
        self._codes, self._ids = codes, ids

    def trim(self) -> None:
        """Give back spare capacity (after a build that appended in pieces)."""
        self._codes = self._codes[:self._count].copy()
        self._ids = self._ids[:self._count].copy()

    def distances(self, query: np.ndarray) -> np.ndarray:
        """Hamming distance from ``query``'s code to every record's (uint16, by row)."""
        code = self.quantize(np.asarray(query, dtype=np.float32).reshape(1, -1))[0]
        scan = hamming_native if self.native else hamming_numpy
        return scan(self.codes, code)

    def candidates(self, query: np.ndarray, count: int = CANDIDATES,
                   mask: np.ndarray | None = None) -> np.ndarray:
        """The rows of the ``count`` codes nearest ``query``'s, among the rows ``mask`` keeps."""
        distances = self.distances(query)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (self._count,):
                raise IndexInputError(f"a mask of {mask.shape} for {self._count} rows")
            kept = np.flatnonzero(mask)
            return kept[nearest_rows(distances[kept], count)]
        return nearest_rows(distances, count)

    def estimate(self, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
        """How similar each row is to ``query``, from its code alone: the vector taken as
        ``center + scale * sign`` (``scale``: the mean distance from the center a
        dimension), less the term every row shares; ranks rows much as cosine does."""
        bits = np.unpackbits(self._codes[rows].view(np.uint8), axis=1, bitorder="little")
        weights = self.scale * np.asarray(query, dtype=np.float32)
        return bits.astype(np.float32) @ (2 * weights)

    def shortlist(self, rows: np.ndarray, query: np.ndarray, count: int) -> np.ndarray:
        """The ``count`` of ``rows`` with the best :meth:`estimate` (ties: lower row), by row."""
        if count >= len(rows):
            return rows
        best = np.lexsort((rows, -self.estimate(rows, query)))[:count]
        return np.sort(rows[best])

    def search(self, query: np.ndarray, k: int, fetch: Fetch, *,
               candidates: int = CANDIDATES, shortlist: int | None = SHORTLIST,
               mask: np.ndarray | None = None) -> list[Hit]:
        """The ``k`` records most similar to ``query`` by cosine, best first.

        The ``candidates`` nearest by Hamming distance, the ``shortlist`` of them best by
        :meth:`estimate` (None: all), ranked by exact cosine over the vectors
        ``fetch(rows)`` returns (len(rows) x dim, in order).
        """
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if query.shape != (self.dim,):
            raise IndexInputError(f"a query of {query.shape[0]} dimensions, the index {self.dim}")
        if not self._count or k <= 0:
            return []
        rows = self.candidates(query, max(candidates, k), mask)
        if shortlist is not None:
            rows = self.shortlist(rows, query, max(shortlist, k))
        if not len(rows):
            return []
        vectors = np.asarray(fetch(rows), dtype=np.float32)
        if vectors.shape != (len(rows), self.dim):
            raise IndexInputError(f"fetch gave {vectors.shape} for {len(rows)} rows")
        scores = cosine(vectors, query)
        order = np.lexsort((rows, -scores))[:k]
        return [Hit(int(self._ids[rows[i]]), int(rows[i]), float(scores[i])) for i in order]

    def params(self) -> dict[str, Any]:
        """What a bench records about the index: the scan that ran and the centring."""
        return {"scan": "c" if self.native else "numpy",
                "centered": bool(np.any(self.center != 0))}


def _center_and_scale(first: np.ndarray, centered: bool
                      ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The center (the mean of ``first``, or none) and each dimension's mean distance from it."""
    if not len(first):
        return None, None
    center = first.mean(axis=0, dtype=np.float64) if centered else np.zeros(first.shape[1])
    scale = np.abs(first - center.astype(np.float32)).mean(axis=0, dtype=np.float64)
    return (center if centered else None), scale


def cosine(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``vectors`` to ``query`` (0 for a zero vector)."""
    norms = np.linalg.norm(vectors, axis=1) * float(np.linalg.norm(query))
    dots = vectors @ query
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
