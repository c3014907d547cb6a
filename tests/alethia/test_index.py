"""alethia's in-RAM index: sign codes about a center, Hamming candidates, exact cosine."""

from __future__ import annotations

import numpy as np
import pytest

from runa.alethia import index as index_module
from runa.alethia.index import (
    BinaryIndex,
    IndexInputError,
    cosine,
    hamming_native,
    hamming_numpy,
    nearest_rows,
)

needs_c = pytest.mark.skipif(not index_module.native_available(),
                             reason="the C scan runa.alethia._popcount is not built")


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def embedding_like(n: int, seed: int = 0, clusters: int = 50) -> np.ndarray:
    """Unit vectors shaped like sentence embeddings: a large component every one shares,
    topics (clusters) and each its own detail."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(384) * 2.0
    topics = rng.standard_normal((clusters, 384))
    which = rng.integers(0, clusters, n)
    return unit(common + topics[which] + 0.8 * rng.standard_normal((n, 384)))


def memory_like(n: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """As the bench makes them (bench/memory_vectors.py): 500 "paragraphs" sharing a large
    component, stored with near copies; queries near a paragraph, not stored."""
    rng = np.random.default_rng(20)
    common = rng.standard_normal(384) * 3.0
    topics = rng.standard_normal((20, 384))
    bases = unit(common + topics[rng.integers(0, 20, 500)] + rng.standard_normal((500, 384)))
    stored = unit(bases[np.arange(n) % 500] + 0.015 * rng.standard_normal((n, 384)))
    asked = unit(bases[rng.integers(0, 500, queries)]
                 + 0.05 * rng.standard_normal((queries, 384)))
    return stored, asked


def reference_distance(a: np.ndarray, b: np.ndarray) -> int:
    return sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b, strict=True))


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = cosine(vectors, query)
    return [int(r) for r in np.lexsort((np.arange(len(vectors)), -scores))[:k]]


def test_a_code_is_48_bytes_whose_bit_i_says_whether_dimension_i_is_above_the_center() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((5, 384)).astype(np.float32)
    center = rng.standard_normal(384).astype(np.float32)
    codes = BinaryIndex(center).quantize(vectors)
    # alethia's default: raw signs, so a rebuild gives the same codes whatever came first
    assert not BinaryIndex.build(vectors).params()["centered"]
    assert BinaryIndex.build(vectors, centered=True).params()["centered"]
    assert codes.shape == (5, 6) and codes.nbytes == 5 * 48
    for vector, code in zip(vectors, codes, strict=True):
        as_int = int.from_bytes(code.tobytes(), "little")
        assert [bool(as_int >> i & 1) for i in range(384)] == list(vector > center)


def test_the_numpy_hamming_scan_counts_the_differing_bits() -> None:
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 2**64, (300, 6), dtype=np.uint64)
    query = rng.integers(0, 2**64, 6, dtype=np.uint64)
    codes[0] = query  # distance 0
    codes[1] = ~query  # distance 384
    found = hamming_numpy(codes, query)
    assert found[0] == 0 and found[1] == 384
    assert found.tolist() == [reference_distance(c, query) for c in codes]


@needs_c
def test_the_c_scan_gives_the_numpy_scans_distances() -> None:
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 2**64, (200_003, 6), dtype=np.uint64)
    query = rng.integers(0, 2**64, 6, dtype=np.uint64)
    assert np.array_equal(hamming_native(codes, query), hamming_numpy(codes, query))


@needs_c
def test_the_c_and_numpy_paths_return_the_same_matches() -> None:
    vectors = embedding_like(20_000, seed=4)
    fast = BinaryIndex.build(vectors)
    slow = BinaryIndex.build(vectors, native=False)
    assert fast.params()["scan"] == "c" and slow.params()["scan"] == "numpy"
    for query in embedding_like(20, seed=5):
        assert (fast.search(query, 10, vectors.__getitem__, candidates=100)
                == slow.search(query, 10, vectors.__getitem__, candidates=100))
        assert (fast.search(query, 10, vectors.__getitem__, candidates=1000, shortlist=100)
                == slow.search(query, 10, vectors.__getitem__, candidates=1000, shortlist=100))


@needs_c
def test_the_c_scan_refuses_buffers_that_disagree() -> None:
    from runa.alethia import _popcount

    codes = np.zeros((4, 6), dtype=np.uint64)
    with pytest.raises(ValueError, match="one uint16 a row"):
        _popcount.hamming(codes, codes[0], np.zeros(3, dtype=np.uint16))
    with pytest.raises(ValueError, match="whole rows"):
        _popcount.hamming(codes[:, :5].copy(), codes[0], np.zeros(4, dtype=np.uint16))


def test_nearest_rows_takes_the_smallest_distances_and_ties_go_to_the_lower_row() -> None:
    distances = np.array([5, 1, 3, 1, 3, 3, 0], dtype=np.uint16)
    assert nearest_rows(distances, 4).tolist() == [1, 2, 3, 6]
    assert nearest_rows(distances, 1).tolist() == [6]
    assert nearest_rows(distances, 10).tolist() == list(range(7))


def test_with_candidates_covering_every_record_the_search_is_exact() -> None:
    vectors = embedding_like(3000, seed=6)
    ids = np.arange(3000) * 7 + 100
    index = BinaryIndex.build(vectors, ids)
    for query in embedding_like(5, seed=7):
        hits = index.search(query, 10, vectors.__getitem__, candidates=3000, shortlist=None)
        expected = exact_top(vectors, query, 10)
        assert [h.row for h in hits] == expected
        assert [h.id for h in hits] == [int(ids[r]) for r in expected]
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert hits[0].score == pytest.approx(float(cosine(vectors[expected[:1]], query)[0]))


def test_the_index_holds_no_floats_and_fetches_only_the_shortlist() -> None:
    vectors = embedding_like(5000, seed=8)
    index = BinaryIndex.build(vectors)
    asked: list[int] = []

    def fetch(rows: np.ndarray) -> np.ndarray:
        asked.extend(rows.tolist())
        return vectors[rows]

    index.search(vectors[0], 10, fetch, candidates=1000, shortlist=200)
    assert len(asked) == 200
    assert index.nbytes == 5000 * (48 + 8) + 2 * 384 * 4  # codes, ids, center and scale


def test_appends_grow_the_index_and_give_the_codes_of_one_build() -> None:
    vectors = embedding_like(10_000, seed=9)
    whole = BinaryIndex.build(vectors)
    grown = BinaryIndex(whole.center)
    firsts = [grown.append(vectors[start:start + 997]) for start in range(0, 10_000, 997)]
    assert firsts == list(range(0, 10_000, 997))
    assert len(grown) == 10_000
    assert np.array_equal(grown.codes, whole.codes)
    assert grown.ids.tolist() == list(range(10_000))
    hits = grown.search(vectors[9_999], 1, vectors.__getitem__)
    assert hits[0].row == 9_999 and hits[0].score == pytest.approx(1.0)


def test_a_build_from_blocks_is_a_build_from_the_whole() -> None:
    vectors = embedding_like(70_000, seed=10, clusters=20)
    blocks = (vectors[i:i + 4096] for i in range(0, len(vectors), 4096))
    streamed = BinaryIndex.from_blocks(blocks, capacity=len(vectors), centered=True)
    whole = BinaryIndex.build(vectors, centered=True)
    assert np.array_equal(streamed.center, whole.center)
    assert np.array_equal(streamed.scale, whole.scale)
    assert np.array_equal(streamed.codes, whole.codes)


def test_a_mask_keeps_the_search_to_the_rows_it_allows() -> None:
    vectors = embedding_like(2000, seed=11)
    index = BinaryIndex.build(vectors)
    mask = np.zeros(2000, dtype=bool)
    mask[1000:1100] = True
    hits = index.search(vectors[5], 10, vectors.__getitem__, candidates=50, mask=mask)
    assert len(hits) == 10 and all(1000 <= h.row < 1100 for h in hits)
    with pytest.raises(IndexInputError):
        index.search(vectors[5], 10, vectors.__getitem__, mask=mask[:10])


def test_wrong_shapes_are_refused_with_a_clear_error() -> None:
    index = BinaryIndex()
    with pytest.raises(IndexInputError, match="384"):
        index.append(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(IndexInputError, match="ids"):
        index.append(np.zeros((2, 384), dtype=np.float32), [1])
    assert index.search(np.zeros(384, dtype=np.float32), 5, lambda rows: rows) == []


def test_centering_finds_the_true_neighbours_of_embeddings_sharing_a_component() -> None:
    vectors, queries = memory_like(20_000, 40)
    recalls = {}
    for centered in (True, False):
        index = BinaryIndex.build(vectors, centered=centered)
        found = [
            len({h.row for h in index.search(q, 10, vectors.__getitem__, candidates=200,
                                             shortlist=None)}
                & set(exact_top(vectors, q, 10))) / 10
            for q in queries
        ]
        recalls[centered] = float(np.mean(found))
    assert recalls[True] >= 0.9
    assert recalls[True] > recalls[False] + 0.1


def test_the_estimate_from_codes_shortlists_the_candidates_that_matter() -> None:
    vectors, queries = memory_like(20_000, 40)
    index = BinaryIndex.build(vectors, centered=True)
    found = [len({h.row for h in index.search(q, 10, vectors.__getitem__, candidates=2000,
                                              shortlist=100)}
                 & set(exact_top(vectors, q, 10))) / 10 for q in queries]
    hamming_only = [len({h.row for h in index.search(q, 10, vectors.__getitem__,
                                                     candidates=100, shortlist=None)}
                        & set(exact_top(vectors, q, 10))) / 10 for q in queries]
    assert np.mean(found) >= 0.9
    assert np.mean(found) > np.mean(hamming_only) + 0.05
