"""Answer a question with the chunks of a topic that fit it best.

Three modes: ``vector`` (nearest neighbours by cosine), ``fts`` (BM25 over the
words) and ``hybrid`` (both, the default: every candidate of either list scored
by both, the standardised scores mixed, runa.tieto.fusion). Filters
narrow the candidates of both searches before ranking (runa.tieto.filters).
Every hit carries its cosine ``similarity`` to the question, whatever found it,
so a caller can apply a sieve ("nothing relevant") on one scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runa.protocol.answer import Hit
from runa.protocol.tieto import FUSIONS, MODES, check_number
from runa.tieto.chunk import Chunker
from runa.tieto.embed import Embedder
from runa.tieto.errors import TietoError
from runa.tieto.filters import Compiled, Condition, compile_filters
from runa.tieto.fts import fts_query
from runa.tieto.fusion import rrf, zscore
from runa.tieto.index import TopicIndex


@dataclass(frozen=True)
class RecallParams:
    k: int = 5
    mode: str = "hybrid"
    candidates: int = 50
    """How deep each list goes before fusion (hybrid)."""
    rrf_k: float = 1.0
    """The constant of reciprocal rank fusion (``fusion="rrf"`` only)."""
    fts_weight: float = 0.2
    """Weight of the full-text score: zscore mixes (1 - w)·vector + w·full text;
    rrf weighs the full-text list w, the vector list 1."""
    min_similarity: float = 0.0
    """Drop hits whose cosine similarity to the question is below this (0: keep all)."""
    fusion: str = "zscore"
    """How hybrid combines the lists: ``zscore`` (scores) or ``rrf`` (ranks)."""
    exact: bool = False
    """Rank every matching chunk by cosine instead of a sign-bit prefilter's candidates
    (slower; the prefilter agrees on ~99% of a top 10, runa.tieto.index)."""

    def __post_init__(self) -> None:
        for name in ("k", "candidates", "rrf_k", "fts_weight", "min_similarity"):
            check_number(name, getattr(self, name))


def question_text(question: str, embedder: Embedder) -> str:
    """The question as the model can take it: its first chunk when it is too long."""
    if embedder.count_tokens(question) <= embedder.max_tokens:
        return question
    chunks = Chunker(embedder.count_tokens, embedder.max_tokens, 0).split(question)
    return chunks[0].text if chunks else question


def recall(index: TopicIndex, question: str, embedder: Embedder | None,
           conditions: Sequence[Condition] = (), params: RecallParams = RecallParams()
           ) -> list[Hit]:
    """The best ``params.k`` hits for ``question``; FilterError for a bad filter."""
    if params.mode not in MODES:
        raise TietoError(f"mode {params.mode!r} is not one of {', '.join(MODES)}")
    if params.fusion not in FUSIONS:
        raise TietoError(f"fusion {params.fusion!r} is not one of {', '.join(FUSIONS)}")
    if not question.strip():
        raise TietoError("the question is empty")
    compiled = compile_filters(conditions, index.config, index.key_exists, index.all_keys) \
        if conditions else None
    query = None
    if params.mode != "fts" or params.min_similarity > 0:
        if embedder is None:
            raise TietoError(f"mode {params.mode!r} needs the embedding model")
        index.check_embedder(embedder.model_id, embedder.dim)
        query = embedder.embed([question_text(question, embedder)])[0]
    k = max(1, params.k)
    depth = k if params.mode != "hybrid" else max(k, params.candidates)
    ranked = _rank(index, question, query, compiled, params, depth)
    return _hits(index, ranked, query, params, k)


def _rank(index: TopicIndex, question: str, query: np.ndarray | None,
          compiled: Compiled | None, params: RecallParams, depth: int
          ) -> list[tuple[int, float, dict[str, int], float | None]]:
    """(chunk id, score, ranks, cosine distance if known), best first."""
    vector = index.vector_search(query, depth, compiled, exact=params.exact) \
        if query is not None and params.mode != "fts" else []
    match = fts_query(question)
    if params.mode == "hybrid" and params.fusion == "zscore":
        # the words' score of every vector candidate too, in the same full-text scan
        words, bm25 = index.fts_search_with(match, depth, [i for i, _ in vector], compiled)
    else:
        words = index.fts_search(match, depth, compiled) if params.mode != "vector" else []
        bm25 = {}
    distance = dict(vector)
    if params.mode == "vector":
        return [(i, 1.0 - d, {"vector": r}, d) for r, (i, d) in enumerate(vector, start=1)]
    if params.mode == "fts":
        return [(i, -s, {"fts": r}, None) for r, (i, s) in enumerate(words, start=1)]
    rankings = {"vector": [i for i, _ in vector], "fts": [i for i, _ in words]}
    if params.fusion == "rrf":
        fused = rrf(rankings, params.rrf_k, {"vector": 1.0, "fts": params.fts_weight})
        return [(f.id, f.score, f.ranks, distance.get(f.id)) for f in fused]
    assert query is not None  # hybrid always embeds the question
    # Every candidate gets both scores: the cosine of the ones only the words found,
    # the BM25 of the ones only the vectors found (0 when no word of the question is in it).
    distance.update(index.distances([i for i in rankings["fts"] if i not in distance], query))
    bm25.update(words)
    scores = {"vector": {i: 1.0 - d for i, d in distance.items()},
              "fts": {i: -bm25.get(i, 0.0) for i in distance}}
    fused = zscore(scores, rankings,
                   {"vector": 1.0 - params.fts_weight, "fts": params.fts_weight})
    return [(f.id, f.score, f.ranks, distance.get(f.id)) for f in fused]


def _hits(index: TopicIndex, ranked: list[tuple[int, float, dict[str, int], float | None]],
          query: np.ndarray | None, params: RecallParams, k: int) -> list[Hit]:
    selected = []
    for chunk_id, score, ranks, dist in ranked:
        if dist is None and query is not None:  # found by words only: measure it too
            dist = index.distances([chunk_id], query).get(chunk_id)
        if params.min_similarity > 0 and (dist is None or 1.0 - dist < params.min_similarity):
            continue
        selected.append((chunk_id, score, ranks, dist))
        if len(selected) == k:
            break
    ranked = selected
    rows = index.chunks([i for i, _, _, _ in ranked])
    hits = []
    for chunk_id, score, ranks, dist in ranked:
        row = rows[chunk_id]
        hits.append(Hit(
            text=row.text, score=round(score, 6),
            similarity=None if dist is None else round(1.0 - dist, 6),
            source=row.source, line=row.line, chunk=row.ordinal, start=row.start,
            end=row.end, record=row.record, meta=row.meta, ranks=ranks, id=chunk_id,
        ))  # fmt: skip
    return hits
