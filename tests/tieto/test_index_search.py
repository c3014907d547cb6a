"""The index's nearest-neighbour search: a sign-bit prefilter, then exact cosine.

Vectors here are random clusters written straight into a TopicIndex (no embedder), so
the prefilter has to separate many near neighbours, as on a real corpus.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from runa.tieto.chunk import Chunk
from runa.tieto.errors import IndexCorruptError
from runa.tieto.filters import compile_filters, parse
from runa.tieto.index import PreparedDoc, TopicIndex, sign_bits
from runa.tieto.sources import Record
from runa.tieto.topic import TopicConfig, declare

DIM = 64


def clustered(n: int, dim: int = DIM, seed: int = 1) -> np.ndarray:
    """``n`` unit vectors in 40 clusters: many near neighbours, as on a real corpus."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim))
    vectors = centres[rng.integers(0, 40, n)] + rng.standard_normal((n, dim)) * 0.5
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def build(path: Path, n: int, *, dim: int = DIM, colour: list[int] | None = None
          ) -> tuple[TopicIndex, np.ndarray]:
    """An index of ``n`` clustered chunks; ``colour`` (if given) is a declared key."""
    vectors = clustered(n, dim)
    config = TopicConfig("t", "test:1", dim, declare([("colour", "integer")]))
    index = TopicIndex.create(path, config)
    with index.bulk() as bulk:
        for i, v in enumerate(vectors):
            value = None if colour is None else colour[i]
            meta = {} if value is None else {"colour": value}
            bulk.add(PreparedDoc(Record(f"c{i}", 1, f"chunk {i}", meta),
                                 [Chunk(0, f"chunk {i}", 0, 7, 3)], v[None, :], [value]))
    return index, vectors


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int,
              mask: np.ndarray | None = None) -> list[int]:
    scores = vectors @ query
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    return [int(i) + 1 for i in np.argsort(-scores, kind="stable")[:k]]  # chunk ids from 1


def test_prefilter_agrees_with_the_exact_top_10(tmp_path: Path) -> None:
    index, vectors = build(tmp_path / "i.sqlite", 4000)
    rng = np.random.default_rng(7)
    overlaps = []
    for q in vectors[rng.integers(0, len(vectors), 20)] + 0.01:
        q = (q / np.linalg.norm(q)).astype(np.float32)
        got = index.vector_search(q, 10)
        assert [d for _, d in got] == sorted(d for _, d in got)
        overlaps.append(len({i for i, _ in got} & set(exact_top(vectors, q, 10))) / 10)
        assert [i for i, _ in index.vector_search(q, 10, exact=True)] == \
            exact_top(vectors, q, 10)
    assert np.mean(overlaps) >= 0.95, overlaps
    index.close()


def test_distances_are_exact_cosine_whatever_found_them(tmp_path: Path) -> None:
    index, vectors = build(tmp_path / "i.sqlite", 300)
    q = vectors[5]
    got = dict(index.vector_search(q, 5, prefilter=20))
    for chunk_id, distance in got.items():
        assert distance == pytest.approx(1 - float(vectors[chunk_id - 1] @ q), abs=1e-5)
    assert index.distances(got, q) == pytest.approx(got)
    index.close()


def test_a_small_topic_is_searched_exactly(tmp_path: Path) -> None:
    index, vectors = build(tmp_path / "i.sqlite", 400)
    for q in vectors[:10]:
        assert [i for i, _ in index.vector_search(q, 10)] == exact_top(vectors, q, 10)
    index.close()


def test_filtered_search_returns_k_far_matches_exactly(tmp_path: Path) -> None:
    """Only 12 chunks match, all far from the question: all k come back, in exact order."""
    n = 3000
    vectors = clustered(n)
    q = vectors[0]
    far = np.argsort(vectors @ q)[:12]  # the least similar chunks
    mask = np.zeros(n, dtype=bool)
    mask[far] = True
    index, _ = build(tmp_path / "i.sqlite", n, colour=[int(m) for m in mask])
    compiled = compile_filters([parse("colour=1")], index.config, index.key_exists,
                               index.all_keys)
    got = index.vector_search(q, 10, compiled, prefilter=50)
    assert [i for i, _ in got] == exact_top(vectors, q, 10, mask)
    index.close()


def test_dimension_not_a_multiple_of_8_is_padded(tmp_path: Path) -> None:
    index, vectors = build(tmp_path / "i.sqlite", 50, dim=36)
    assert sign_bits(vectors[:1]).shape == (1, 5)
    assert index.vector_search(vectors[3], 1)[0][0] == 4
    index.close()


def test_sign_bits_match_sqlite_vec_quantize_binary(tmp_path: Path) -> None:
    index, vectors = build(tmp_path / "i.sqlite", 3)
    (expected,) = index.db.execute("SELECT vec_quantize_binary(?)",
                                   (vectors[0].tobytes(),)).fetchone()
    assert sign_bits(vectors[:1])[0].tobytes() == expected
    index.close()


def test_removed_source_leaves_no_vectors(tmp_path: Path) -> None:
    config = TopicConfig("t", "test:1", 8)
    index = TopicIndex.create(tmp_path / "i.sqlite", config)
    v = np.eye(8, dtype=np.float32)
    docs = [PreparedDoc(Record("a", 1, "alpha beta", {}), [Chunk(0, "alpha beta", 0, 10, 2)],
                        v[:1], [])]
    index.replace_source("a.md", "0" * 64, 10, True, docs)
    assert index.vector_search(v[0], 5)
    index.remove_source("a.md")
    assert index.vector_search(v[0], 5) == []
    counts = [index.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("embeddings", "vector_bits", "chunks")]
    assert counts == [0, 0, 0]
    index.close()


def test_an_index_of_the_old_format_says_re_ingest(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    TopicIndex.create(path, TopicConfig("notes", "test:1", 8)).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE info SET value = '1' WHERE key = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(IndexCorruptError, match=r"index format 1, this Runa reads format 2; "
                       r"re-ingest the topic: runa ingest PATH\.\.\. --topic notes --rebuild"):
        TopicIndex.open(path)


def test_fts_search_with_scores_the_given_chunks_in_the_same_scan(tmp_path: Path) -> None:
    config = TopicConfig("t", "test:1", 8)
    index = TopicIndex.create(tmp_path / "i.sqlite", config)
    texts = ["apple pie", "apple apple tart", "pear", "apple", "plum cake"]
    with index.bulk() as bulk:
        for i, text in enumerate(texts):
            bulk.add(PreparedDoc(Record(f"r{i}", 1, text, {}), [Chunk(0, text, 0, len(text), 2)],
                                 np.eye(8, dtype=np.float32)[i:i + 1], []))
    best, scored = index.fts_search_with('"apple"', 1, [1, 3, 5])
    assert best == index.fts_search('"apple"', 1)
    alone = dict(index.fts_search('"apple"', 10))
    assert scored == pytest.approx({1: alone[1]})  # 3 and 5 have no "apple"
    assert index.fts_search_with("", 5, [1]) == ([], {})
    index.close()
