"""RAG (tieto): retrieval quality on a labelled set, query latency on 100k chunks (issue 10).

Three measurements, all through runa.tieto with the real all-MiniLM-L6-v2 GGUF:

1. Quality on the held-back half (``test``) of bench/data/rag/python-faq-labels.jsonl:
   the Python FAQ's questions asked of a corpus of the FAQ's answers (questions
   removed) plus the Python tutorial and glossary as distractors (bench/rag_corpus.py
   says how it was made). recall@5 (the answer's chunk in the top 5) and MRR@10 for
   vector, full-text and hybrid (z-score fusion) retrieval, and for the vectors
   without the sign-bit prefilter (``vector_exact``).
2. Latency on a file-backed index of 100,000 chunks of 384-d vectors with a warm
   cache: the real corpus chunks plus filler chunks (sentences of the Python library
   reference regrouped, vectors near real ones). p50 of vector, hybrid and filtered
   queries (a declared key keeping 10% and 50% of the chunks; also the same filters
   on an undeclared key), question embedding excluded (measured apart); rounds
   interleaved; wall time, and the CPU time of the querying thread (on a shared
   machine the wall time includes waiting for a CPU). A/B in the same run: the same
   queries with ``exact=True`` (no prefilter), and the KNN statement of the previous
   layout (a float vec0 table, bench-only, ``vec0_float_*``). Faithfulness: overlap
   of the top 10 with numpy's exact top 10 (unfiltered and filtered10). Baseline:
   numpy brute force (matmul + argpartition) on the same vectors.
3. Ingest speed: chunks per second of a cold ingest (chunk + embed + write).

Indexes are cached in ~/.cache/runa-bench/rag (never in the repository). ``--quick``
(under 60 s) reuses them and measures cold ingest on a small sample; without it the
eval index and its ingest are measured in full, and the 100k index is built if absent.

    python bench/rag.py [--quick] [--split test|tune] [--rrf-k K] [--fts-weight W]

Writes bench/results/rag.json (not with --split tune) and prints the table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import Result, Target, percentile, report
from rag_corpus import CACHE, LABELS, load_labels, package_root, source_hashes, write_corpus

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runa.models.catalog import MINILM_L6_V2  # noqa: E402
from runa.paths import Paths, personal_stack  # noqa: E402
from runa.tieto.api import Tieto, TietoSettings, embedding_model_path  # noqa: E402
from runa.tieto.chunk import Chunk  # noqa: E402
from runa.tieto.embed import Embedder, LlamaEmbedder  # noqa: E402
from runa.tieto.filters import parse as parse_filter  # noqa: E402
from runa.tieto.index import PREFILTER, SCHEMA_VERSION, PreparedDoc, TopicIndex  # noqa: E402
from runa.tieto.recall import RecallParams, recall  # noqa: E402
from runa.tieto.sources import Record  # noqa: E402
from runa.tieto.topic import TopicConfig, declare  # noqa: E402

WORK = CACHE / "rag"
BIG_CHUNKS = 100_000
BIG_VERSION = 2  # bump when the 100k index's recipe or the index format changes
K_EVAL = 10
K_QUERY = 10


class Precomputed:
    """An Embedder whose question vectors were computed beforehand (latency excludes them)."""

    def __init__(self, inner: Embedder, vectors: dict[str, np.ndarray]) -> None:
        self.inner, self.vectors = inner, vectors
        self.model_id, self.dim, self.max_tokens = inner.model_id, inner.dim, inner.max_tokens

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


def load_embedder() -> LlamaEmbedder:
    dirs = Paths.for_stack(personal_stack()).models
    try:
        return LlamaEmbedder(embedding_model_path("default", dirs))
    except Exception as e:  # say what to do, whatever it was
        sys.exit(f"bench/rag.py needs the embedding model: run 'runa models setup' ({e})")


# -- 1. the eval index and quality ---------------------------------------------------------

def eval_settings(root: Path, args: argparse.Namespace) -> TietoSettings:
    return TietoSettings(root=root, chunk_tokens=args.chunk_tokens, overlap=args.overlap,
                         recall=RecallParams(k=K_EVAL, candidates=args.candidates,
                                             rrf_k=args.rrf_k, fts_weight=args.fts_weight))


def eval_index(doc_root: Path, embedder: LlamaEmbedder, args: argparse.Namespace
               ) -> tuple[Tieto, dict[str, Any]]:
    """The eval topic, built now (timed) unless cached for this corpus and chunking."""
    key = hashlib.sha256(json.dumps([source_hashes(doc_root), embedder.model_id, SCHEMA_VERSION,
                                     args.chunk_tokens, args.overlap]).encode()).hexdigest()[:12]
    root = WORK / f"eval-{key}"
    corpus = WORK / "corpus"
    tieto = Tieto(eval_settings(root, args), embedder_factory=lambda: embedder)
    if (root / "faq" / "index.sqlite").is_file():
        if args.quick:
            return tieto, {"eval_index": "cached"}
        shutil.rmtree(root)  # a full run measures the cold ingest of the whole corpus
    elif args.quick:
        print("note: no cached eval index; --quick builds it now (takes minutes once)")
    n_docs = write_corpus(doc_root, corpus)
    started = time.perf_counter()
    report_ = tieto.ingest([corpus], "faq")
    seconds = time.perf_counter() - started
    if not report_.ok:
        sys.exit(f"eval corpus ingest failed: {report_.problems[:3]}")
    return tieto, {"eval_index": "built", "corpus_documents": n_docs,
                   "ingest_full_chunks": report_.chunks_embedded,
                   "ingest_full_s": round(seconds, 1),
                   "ingest_chunks_s": report_.chunks_embedded / seconds}


def quality(tieto: Tieto, queries: list[dict[str, str]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for mode, exact in (("vector", False), ("fts", False), ("hybrid", False),
                        ("vector", True)):
        found_at_5 = 0
        reciprocal = 0.0
        for q in queries:
            hits = tieto.recall(q["query"], "faq", k=K_EVAL, mode=mode, exact=exact)
            ranks = [i for i, h in enumerate(hits, 1) if h.meta.get("entry") == q["relevant"]]
            if ranks and ranks[0] <= 5:
                found_at_5 += 1
            if ranks:
                reciprocal += 1.0 / ranks[0]
        name = f"{mode}_exact" if exact else mode  # exact: the vectors without the prefilter
        out[f"{name}_recall_at_5"] = round(found_at_5 / len(queries), 4)
        out[f"{name}_mrr"] = round(reciprocal / len(queries), 4)
    best = max(out["vector_mrr"], out["fts_mrr"])
    out["hybrid_mrr_gain"] = round(out["hybrid_mrr"] - best, 4)
    return out


def cold_ingest_sample(corpus: Path, embedder: LlamaEmbedder, args: argparse.Namespace,
                       n_files: int = 12) -> dict[str, Any]:
    """Chunks per second of a cold ingest of the first ``n_files`` FAQ answers."""
    sample = WORK / "sample-docs"
    shutil.rmtree(sample, ignore_errors=True)
    sample.mkdir(parents=True)
    for path in sorted((corpus / "faq").glob("*.md"))[:n_files]:
        shutil.copy(path, sample / path.name)
    root = WORK / "sample-topics"
    shutil.rmtree(root, ignore_errors=True)
    tieto = Tieto(eval_settings(root, args), embedder_factory=lambda: embedder)
    started = time.perf_counter()
    done = tieto.ingest([sample], "sample")
    seconds = time.perf_counter() - started
    tieto.close()
    shutil.rmtree(root, ignore_errors=True)
    return {"ingest_chunks_s": done.chunks_embedded / seconds,
            "ingest_sample_chunks": done.chunks_embedded}


# -- 2. the 100k index and latency ---------------------------------------------------------

def filler_texts(doc_root: Path, n: int, rng: random.Random) -> list[str]:
    """``n`` chunk-sized texts regrouped from sentences of the Python library reference."""
    sentences: list[str] = []
    for path in sorted((doc_root / "usr/share/doc/python3.11/html/_sources/library")
                       .glob("*.rst.txt")):
        text = re.sub(r"\s+", " ", path.read_text(errors="replace"))
        sentences += [s for s in re.split(r"(?<=[.!?])\s+", text) if 20 <= len(s) <= 400]
    out = []
    for _ in range(n):
        words = 0
        parts = []
        while words < 120:
            s = rng.choice(sentences)
            parts.append(s)
            words += s.count(" ") + 1
        out.append(" ".join(parts))
    return out


def big_index(doc_root: Path, eval_topic: TopicIndex) -> Path:
    """The 100k-chunk index, built once: real eval chunks plus filler near real vectors."""
    path = WORK / f"big-v{BIG_VERSION}" / "bench100k" / "index.sqlite"
    if path.is_file():
        return path
    print(f"building the {BIG_CHUNKS}-chunk index once: {path}")
    shutil.rmtree(path.parent, ignore_errors=True)
    rows = eval_topic.db.execute(
        "SELECT c.text, e.vector FROM chunks c JOIN embeddings e ON e.chunk_id = c.id "
        "ORDER BY c.id").fetchall()
    real = [(t, np.frombuffer(b, dtype=np.float32)) for t, b in rows]
    rng = random.Random(10)
    nprng = np.random.default_rng(10)
    filler = filler_texts(doc_root, BIG_CHUNKS - len(real), rng)
    base = np.stack([v for _, v in real])
    config = TopicConfig("bench100k", eval_topic.config.model_id, eval_topic.config.dim,
                         declare([("bucket", "integer")]))
    index = TopicIndex.create(path, config)
    started = time.perf_counter()
    with index.bulk() as bulk:
        for i in range(BIG_CHUNKS):
            if i < len(real):
                text, vector = real[i]
            else:
                text = filler[i - len(real)]
                v = base[rng.randrange(len(base))] + nprng.standard_normal(base.shape[1]) * 0.03
                vector = (v / np.linalg.norm(v)).astype(np.float32)
            meta = {"bucket": i % 10, "shard": i % 10}
            chunk = Chunk(0, text, 0, len(text), 0)
            bulk.add(PreparedDoc(Record(f"chunk {i}", 1, text, meta), [chunk],
                                 vector[None, :], [i % 10]))
    index.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    index.close()
    print(f"built in {time.perf_counter() - started:.0f} s")
    return path


def float_vec0(index: TopicIndex) -> None:
    """Bench-only A/B: the vectors also in a float vec0 table (tieto's format 1 layout)."""
    if index.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'bench_float_vec0'"
                        ).fetchone():
        return
    print("adding the float vec0 table for the A/B once")
    index.db.execute("CREATE VIRTUAL TABLE bench_float_vec0 USING vec0(chunk_id integer "
                     "primary key, embedding float[384] distance_metric=cosine, "
                     "bucket integer)")
    index.db.execute("BEGIN")
    index.db.execute("INSERT INTO bench_float_vec0(chunk_id, embedding, bucket) "
                     "SELECT chunk_id, vector, (chunk_id - 1) % 10 FROM embeddings")
    index.db.execute("COMMIT")
    index.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def index_mib(path: Path) -> int:
    """The 100k index's own size, without the bench-only A/B table (SQLite's dbstat)."""
    index = TopicIndex.open(path)
    (size,) = index.db.execute("SELECT sum(pgsize) FROM dbstat WHERE name NOT LIKE "
                               "'bench_float_vec0%'").fetchone()
    index.close()
    return round(size / 2**20)


def latency(path: Path, embedder: Embedder, questions: list[str], rounds: int
            ) -> tuple[dict[str, float], dict[str, float]]:
    index = TopicIndex.open(path)
    float_vec0(index)
    float_sql = ("SELECT chunk_id, distance FROM bench_float_vec0 WHERE embedding MATCH ? "
                 "AND k = ?")
    vectors = {q: v for q, v in zip(questions, embedder.embed(questions), strict=True)}
    fake = Precomputed(embedder, vectors)
    embed_ms = []
    for q in questions[:20]:
        t = time.perf_counter()
        embedder.embed([q])
        embed_ms.append((time.perf_counter() - t) * 1000)
    # name: (mode, filters, exact vector scan); the _exact kinds are the A/B of the
    # bit prefilter, in the same run.
    kinds: dict[str, tuple[str, list[str], bool]] = {
        "vector_query": ("vector", [], False),
        "vector_exact_query": ("vector", [], True),
        "filtered10_query": ("vector", ["bucket=3"], False),
        "filtered10_exact_query": ("vector", ["bucket=3"], True),
        "filtered50_query": ("vector", ["bucket<5"], False),
        "filtered10_undeclared_query": ("vector", ["shard=3"], False),
        "filtered50_undeclared_query": ("vector", ["shard<5"], False),
        "fts_query": ("fts", [], False),
        "hybrid_query": ("hybrid", [], False),
    }
    conditions = {name: [parse_filter(f) for f in flt] for name, (_, flt, _) in kinds.items()}
    rows = index.db.execute("SELECT chunk_id, vector FROM embeddings ORDER BY chunk_id")
    ids, blobs = zip(*rows.fetchall(), strict=True)
    chunk_ids = np.array(ids)
    matrix = np.stack([np.frombuffer(b, dtype=np.float32) for b in blobs])
    bucket3 = (chunk_ids - 1) % 10 == 3  # big_index: bucket = i % 10 for chunk id i + 1
    baseline_names = ["numpy_bruteforce", "vec0_float_scan", "vec0_float_filtered10_scan"]
    samples: dict[str, list[float]] = {name: [] for name in [*kinds, *baseline_names]}
    cpu: dict[str, list[float]] = {name: [] for name in kinds}
    overlap: dict[str, list[float]] = {name: [] for name in (
        "vector", "vector_exact", "filtered10", "filtered10_exact")}
    for round_ in range(rounds + 1):  # round 0 warms the cache and is not counted
        for q in questions:
            found: dict[str, list[int]] = {}
            for name, (mode, _, exact) in kinds.items():
                params = RecallParams(k=K_QUERY, mode=mode, exact=exact)
                t, c = time.perf_counter(), time.thread_time()
                hits = recall(index, q, fake, conditions[name], params)
                ms = (time.perf_counter() - t) * 1000
                if round_:
                    samples[name].append(ms)
                    cpu[name].append((time.thread_time() - c) * 1000)
                if len(hits) != K_QUERY and mode != "fts":
                    sys.exit(f"{name} returned {len(hits)} hits for {q!r}, wanted {K_QUERY}")
                found[name] = [h.id for h in hits]
            t = time.perf_counter()
            scores = matrix @ vectors[q]
            top = np.argpartition(-scores, K_QUERY)[:K_QUERY]
            top = top[np.argsort(-scores[top])]
            ms = (time.perf_counter() - t) * 1000
            blob = vectors[q].tobytes()
            for name, sql in (("vec0_float_scan", float_sql),
                              ("vec0_float_filtered10_scan", float_sql + " AND bucket = 3")):
                c = time.thread_time()
                index.db.execute(sql, (blob, K_QUERY)).fetchall()
                if round_:
                    samples[name].append((time.thread_time() - c) * 1000)
            if round_:
                samples["numpy_bruteforce"].append(ms)
                continue
            # Faithfulness, once per question: the prefiltered top 10 against the exact one.
            masked = np.where(bucket3, scores, -np.inf)
            top3 = np.argpartition(-masked, K_QUERY)[:K_QUERY]
            for key, exact_ids in (("vector", top), ("filtered10", top3)):
                want = set(chunk_ids[exact_ids].tolist())
                for variant in (key, f"{key}_exact"):
                    overlap[variant].append(len(want & set(found[f"{variant}_query"])) / K_QUERY)
    index.close()
    metrics = {f"{name}_p50_ms": round(percentile(s, 50), 2) for name, s in samples.items()
               if name not in baseline_names}
    for name in kinds:
        metrics[f"{name}_cpu_p50_ms"] = round(percentile(cpu[name], 50), 2)
    for key, values in overlap.items():
        metrics[f"{key}_overlap_at_10"] = round(float(np.mean(values)), 4)
        metrics[f"{key}_overlap_at_10_min"] = round(float(np.min(values)), 2)
    metrics["question_embed_p50_ms"] = round(percentile(embed_ms, 50), 2)
    metrics["filtered50_over_vector_ratio"] = round(
        metrics["filtered50_query_p50_ms"] / metrics["vector_query_p50_ms"], 3)
    baselines = {"numpy_bruteforce_p50_ms": round(percentile(samples["numpy_bruteforce"], 50), 2)}
    for name in baseline_names[1:]:  # CPU time: the old layout's KNN statement alone
        baselines[f"{name}_cpu_p50_ms"] = round(percentile(samples[name], 50), 2)
    return metrics, baselines


# -- main ----------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="reuse cached indexes, fewer latency rounds (< 60 s)")
    parser.add_argument("--split", choices=("test", "tune"), default="test",
                        help="which half of the labels to score (tune: for tuning, no file)")
    parser.add_argument("--rrf-k", type=float, default=None)
    parser.add_argument("--fts-weight", type=float, default=None)
    parser.add_argument("--candidates", type=int, default=None)
    parser.add_argument("--chunk-tokens", type=int, default=None)
    parser.add_argument("--overlap", type=int, default=None)
    parser.add_argument("--quality-only", action="store_true", help="skip latency and ingest")
    args = parser.parse_args()
    defaults = RecallParams()
    args.rrf_k = defaults.rrf_k if args.rrf_k is None else args.rrf_k
    args.candidates = defaults.candidates if args.candidates is None else args.candidates
    args.fts_weight = defaults.fts_weight if args.fts_weight is None else args.fts_weight
    args.chunk_tokens = args.chunk_tokens or 254
    args.overlap = 32 if args.overlap is None else args.overlap
    started = time.perf_counter()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    header, labels = load_labels()
    doc_root = package_root()
    if source_hashes(doc_root) != header["files"]:
        sys.exit(f"the FAQ sources differ from those {LABELS.name} was made from")
    embedder = load_embedder()
    tieto, built = eval_index(doc_root, embedder, args)
    queries = [q for q in labels if q["split"] == args.split]
    metrics: dict[str, float] = {}
    params: dict[str, Any] = {
        "labels": f"{LABELS.relative_to(REPO)} ({args.split}: {len(queries)} queries)",
        "corpus": header["source"], "model": MINILM_L6_V2.filename,
        "chunk_tokens": args.chunk_tokens, "overlap": args.overlap, "rrf_k": args.rrf_k,
        "fts_weight": args.fts_weight, "candidates": args.candidates, "k_eval": K_EVAL,
        "fusion": RecallParams().fusion, "prefilter": PREFILTER,
        "quick": args.quick,
    }
    metrics.update(quality(tieto, queries))
    eval_topic = tieto.open("faq")
    params["eval_chunks"] = eval_topic.stats()["chunks"]
    params["eval_index"] = built["eval_index"]
    if not args.quality_only:
        if "ingest_chunks_s" in built:
            metrics["ingest_chunks_s"] = round(built["ingest_chunks_s"], 2)
            params["ingest_measured_on"] = f"full corpus, {built['ingest_full_chunks']} chunks"
        else:
            sample = cold_ingest_sample(WORK / "corpus", embedder, args)
            metrics["ingest_chunks_s"] = round(sample["ingest_chunks_s"], 2)
            params["ingest_measured_on"] = f"sample, {sample['ingest_sample_chunks']} chunks"
        big = big_index(doc_root, eval_topic)
        rounds = 3 if args.quick else 5
        n_q = 12 if args.quick else 40
        lat, baselines = latency(big, embedder, [q["query"] for q in queries][:n_q], rounds)
        metrics.update(lat)
        params.update({"index_chunks": BIG_CHUNKS, "dim": embedder.dim, "k_query": K_QUERY,
                       "latency_queries": n_q, "rounds": rounds,
                       "index_mib": index_mib(big),
                       "loadavg_1m": round(os.getloadavg()[0], 2)})
    else:
        baselines = {}
    tieto.close()
    result = Result("rag", params, metrics, baselines, [
        Target("vector_query_p50_ms", "<=", 50.0),
        Target("filtered10_query_p50_ms", "<=", 20.0),
        Target("filtered50_over_vector_ratio", "<=", 1.0),
        Target("hybrid_mrr_gain", ">=", 0.02),
    ])
    params["wall_s"] = round(time.perf_counter() - started, 1)
    if args.split == "tune" or args.quality_only:
        print(json.dumps({"params": params, "metrics": metrics}, indent=2))
        return 0
    return report(result)


if __name__ == "__main__":
    sys.exit(main())
