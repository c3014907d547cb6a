"""tieto's settings, the [tieto] section: retrieval over a person's own documents
(docs/tieto.md)."""

from __future__ import annotations

from runa.config import Check, Setting, in_range, one_of
from runa.protocol.names import topic_name_problem
from runa.protocol.tieto import FUSIONS, MODES, UNCITED, number_problem


def wire_number(name: str) -> Check:
    """The range tieto holds number ``name`` to in a request (``runa.protocol.tieto``), so
    ``runa config check`` refuses exactly what a recall request would."""
    return lambda value: number_problem(name, value)


SETTINGS: tuple[Setting, ...] = (
    Setting("tieto.dir", str, "",
            "Directory of the topic indexes (empty: <data dir>/tieto, e.g. "
            "~/.local/share/runa/tieto)."),
    Setting("tieto.embedding_model", str, "default",
            "The embedding model: a catalog name, a file in a models directory, or a path."),
    Setting("tieto.threads", int, -1, "Threads for embedding (-1: one per usable CPU).",
            in_range(-1, 1024)),
    Setting("tieto.chunk_tokens", int, 254,
            "Longest chunk in the embedding model's word-pieces (254 + [CLS] + [SEP] = 256).",
            in_range(16, 254)),
    Setting("tieto.chunk_overlap", int, 32,
            "Word-pieces of whole sentences consecutive chunks share.", in_range(0, 100)),
    Setting("tieto.k", int, 5, "Chunks 'runa recall' returns.", wire_number("k")),
    Setting("tieto.mode", str, "hybrid", "Ranking: hybrid (vector + full text, fused), "
            "vector or fts.", one_of(*MODES)),
    Setting("tieto.candidates", int, 50,
            "Depth of the vector and full-text lists before fusion.", wire_number("candidates")),
    Setting("tieto.fusion", str, "zscore",
            "How hybrid combines vector and full-text results: zscore (standardised scores, "
            "mixed by fts_weight) or rrf (reciprocal rank fusion).", one_of(*FUSIONS)),
    Setting("tieto.rrf_k", float, 1.0,
            "Reciprocal rank fusion constant (fusion = rrf): score = sum of "
            "weight/(rrf_k + rank).", wire_number("rrf_k")),
    Setting("tieto.fts_weight", float, 0.2,
            "Weight of the full-text side in hybrid ranking, 0-1 (zscore: the vector score "
            "weighs 1 minus this; rrf: the vector ranking weighs 1).", wire_number("fts_weight")),
    Setting("tieto.min_similarity", float, 0.0,
            "Drop chunks whose cosine similarity to the question is below this (0: keep all).",
            wire_number("min_similarity")),
    Setting("tieto.sieve", float, 0.35,
            "'runa recall --complete' and /rag: sources under this cosine similarity are not "
            "given to the model; with none left the answer is that it does not know.",
            wire_number("sieve")),
    Setting("tieto.uncited", str, "mark",
            "A --complete or /rag answer that cites none of its sources: mark it as not "
            "grounded, or refuse it (\"I don't know\" and the best passage instead).",
            one_of(*UNCITED)),
    Setting("tieto.complete_k", int, 3,
            "Chunks retrieved as the sources of a completion (--complete, /rag).",
            wire_number("k")),
    Setting("tieto.short_term_topic", str, "short-term",
            "Topic that short-term memory (keys the keeper promotes) is filed into; on the "
            "shared stack each user gets <topic>-u<uid>.", topic_name_problem),
)
