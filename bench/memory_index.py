"""alethia's search index at a library's scale (issue 23): memory, latency, recall.

``run(quick, progress)`` measures, for an index of 1M records (``--quick``) or 4M:

- ``start_index_build_s``: the build at start: every vector decrypted from an encrypted
  vector file (runa.alethia.vectors, written beforehand, not timed) and quantized;
- ``index_rss_mib``: the growth of this process's resident memory across that build (the
  codes and ids; the decrypted blocks are freed as it goes); ``index_bytes_per_record``:
  the index's arrays' bytes over the records;
- ``search_p50_ms``: one query (already embedded) to its 10 best, candidates' vectors
  decrypted from the vector file; ``recall_at_10``: the share of the exact top 10 (float
  cosine over the same vectors) found;
- baselines over the same vectors: numpy float32 brute force (``numpy_float_search_p50_ms``)
  and tieto's index (``tieto_search_p50_ms``: ``TopicIndex.vector_search``, sqlite-vec bit
  prefilter then exact cosine, over tieto's own tables filled with these vectors).

Run alone (``--records``, ``--no-tieto``) it prints its table and writes nothing;
bench/memory.py runs it at 1M (and 4M) and writes the result. Vectors:
bench/memory_vectors.py. The centring and the candidate count are chosen on the tune queries;
the numbers are on the test queries. The tieto index is cached beside the
embeddings (~/.cache/runa-bench/memory), its fill is not measured; the vector file lives in a
temporary directory removed however the run ends.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cleanup import guarded
from common import Result, Target, percentile
from memory_vectors import CACHE, DOC_GLOBS, NOISE, REPO_DOCS, Embedded, embed_all, stored

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runa.alethia.index import (  # noqa: E402
    CANDIDATES,
    CENTERED,
    SHORTLIST,
    BinaryIndex,
    cosine,
    native_available,
    nearest_rows,
)
from runa.alethia.vectors import VectorFile  # noqa: E402
from runa.crypto import sodium  # noqa: E402

K = 10
CANDIDATE_CHOICES = (300, 1000, 2000, 4000)
SHORTLIST_CHOICES = (100, 200, 300, 500, 750, 1000)
#: The tune recall a choice must reach (the target 0.95 with a margin for the test half).
TUNE_RECALL = 0.97
QUICK_RECORDS = 1_000_000
FULL_RECORDS = 4_000_000

Progress = Callable[[str], object]


def targets(records: int) -> list[Target]:
    return [Target("index_bytes_per_record", "<=", 64),
            Target("index_rss_mib", "<=", 256 * records / FULL_RECORDS),
            Target("search_p50_ms", "<=", 30 if records <= QUICK_RECORDS else 100),
            Target("recall_at_10", ">=", 0.95)]


def rss_bytes() -> int:
    """This process's resident memory, after handing freed heap back to the system (so
    what earlier steps freed does not fall out of the RSS during the build and hide it)."""
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Row numbers of each query's exact top ``k`` by cosine (unit vectors: dot product)."""
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, len(vectors), 1 << 17):
        scores = queries @ vectors[start:start + (1 << 17)].T
        rows = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        scores = np.concatenate([best_scores, scores], axis=1)
        rows = np.concatenate([best_rows, rows], axis=1)
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(scores, keep, 1)
        best_rows = np.take_along_axis(rows, keep, 1)
    return best_rows


def recall(found: list[set[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(f & set(t.tolist())) / K for f, t in zip(found, truth,
                                                                       strict=True)]))


def rescored(rows: np.ndarray, vectors: np.ndarray, query: np.ndarray) -> set[int]:
    scores = cosine(vectors[rows], query)
    return {int(r) for r in rows[np.lexsort((rows, -scores))[:K]]}


def tune(vectors: np.ndarray, queries: np.ndarray, progress: Progress
         ) -> tuple[bool, int, int | None, dict[str, float]]:
    """(centred?, candidates, shortlist) chosen on the tune queries, and every choice's tune
    recall (``centered_2000_300``: centred codes, 2000 Hamming candidates, 300 of them by
    the estimate from codes; ``_all``: every candidate to exact cosine).

    The rule: of the choices whose tune recall reaches TUNE_RECALL, the one that fetches
    the fewest vectors (then: fewer candidates, then centred); when none does, the highest
    recall.
    """
    truth = exact_top(vectors, queries)
    table: dict[str, float] = {}
    for centered in (True, False):
        index = BinaryIndex.build(vectors, centered=centered)
        found: dict[tuple[int, int | None], list[set[int]]] = {}
        for query in queries:
            distances = index.distances(query)
            for count in CANDIDATE_CHOICES:
                rows = nearest_rows(distances, count)
                for short in (*SHORTLIST_CHOICES, None):
                    if short is not None and short >= count:
                        continue
                    kept = rows if short is None else index.shortlist(rows, query, short)
                    found.setdefault((count, short), []).append(rescored(kept, vectors, query))
        for (count, short), sets in found.items():
            name = f"{'centered' if centered else 'raw'}_{count}_{short or 'all'}"
            table[name] = round(recall(sets, truth), 4)
        del index
    progress(f"tune recall@10: {table}")

    def parse(name: str) -> tuple[bool, int, int | None]:
        kind, count, short = name.split("_")
        return kind == "centered", int(count), None if short == "all" else int(short)

    def cost(name: str) -> tuple[int, int, bool]:
        centered, count, short = parse(name)
        return (short or count, count, not centered)

    good = [name for name, value in table.items() if value >= TUNE_RECALL]
    best = min(good, key=cost) if good else max(table, key=lambda n: table[n])
    return (*parse(best), table)


def tieto_index(vectors: np.ndarray, digest: str, progress: Progress, cache: Path
                ) -> tuple[Any, dict[str, Any]]:
    """tieto's TopicIndex holding ``vectors`` as chunks 1..n, from ``cache`` when built."""
    from runa.tieto.index import TopicIndex, sign_bits
    from runa.tieto.topic import TopicConfig

    path = cache / f"tieto-{digest}-{len(vectors)}-{NOISE}.db"
    if path.exists():
        return TopicIndex.open(path), {"tieto_index": "cached"}
    progress(f"filling tieto's index with {len(vectors)} vectors (cached afterwards)")
    partial = path.with_suffix(".partial")
    for stale in cache.glob(f"tieto-*-{len(vectors)}-*"):  # other text: 2 GB a million
        stale.unlink()
    started = time.perf_counter()
    index = TopicIndex.create(partial, TopicConfig("memory-bench", "all-MiniLM-L6-v2", 384))
    try:
        # Only the two tables the vector search reads: no chunk rows, so no foreign keys.
        index.db.execute("PRAGMA foreign_keys=OFF")
        with index.bulk():
            for start in range(0, len(vectors), 1 << 16):
                block = vectors[start:start + (1 << 16)]
                ids = range(start + 1, start + 1 + len(block))
                index.db.executemany("INSERT INTO embeddings(chunk_id, vector) VALUES (?, ?)",
                                     zip(ids, (v.tobytes() for v in block), strict=True))
                index.db.executemany(
                    "INSERT INTO vector_bits(chunk_id, bits) VALUES (?, vec_bit(?))",
                    zip(ids, (b.tobytes() for b in sign_bits(block)), strict=True))
        index.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        index.close()
        partial.replace(path)
    except BaseException:
        index.close()
        for stale in cache.glob(partial.name + "*"):
            stale.unlink()
        raise
    return TopicIndex.open(path), {"tieto_fill_s": round(time.perf_counter() - started, 1)}


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def run(quick: bool, progress: Progress = print, *, records: int | None = None,
        tieto: bool = True, embedded: Embedded | None = None, cache: Path = CACHE,
        workroot: Path | None = None, tune_settings: bool = False) -> dict[str, Any]:
    """The measurement: ``{"params", "metrics", "baselines", "targets"}`` (targets as
    [metric, op, value]); bench/memory.py adds these to its result.

    ``embedded`` replaces the documentation's embeddings (tests), ``cache`` is where
    tieto's index is kept, ``workroot`` where the temporary vector file is made. The index
    runs with alethia's own settings (``runa.alethia.index``: CENTERED, CANDIDATES,
    SHORTLIST), which is what the daemon searches with; ``tune_settings`` instead chooses
    them on the tune queries (slow: every choice is tried) and reports the choice.
    """
    started = time.perf_counter()
    n = records or (QUICK_RECORDS if quick else FULL_RECORDS)
    load = os.getloadavg()[0]
    embedded = embedded or embed_all(progress)
    progress(f"making {n} stored vectors from {len(embedded.base)} base paragraphs")
    vectors = np.empty((n, embedded.base.shape[1]), dtype=np.float32)
    row = 0
    for block in stored(embedded.base, n):
        vectors[row:row + len(block)] = block
        row += len(block)
    params: dict[str, Any] = {
        "records": n, "dim": vectors.shape[1], "k": K, "base_paragraphs": len(embedded.base),
        "tune_queries": len(embedded.tune), "test_queries": len(embedded.test),
        "copies_per_paragraph": round(n / len(embedded.base)),
        "generator": "bench/memory_vectors.py", "sources": [*DOC_GLOBS, *REPO_DOCS],
        "noise_per_dim": NOISE, "text": embedded.digest, "numpy": np.__version__,
        "load_avg_1m_at_start": round(load, 2), "query_embedding": "excluded (pre-embedded)",
        "index_rss": "RSS growth across the build from the vector file",
    }

    if tune_settings:
        centered, candidates, shortlist, table = tune(vectors, embedded.tune, progress)
        params.update(settings="chosen on the tune queries", tune_recall_at_10=table)
    else:
        centered, candidates, shortlist = CENTERED, CANDIDATES, SHORTLIST
        params["settings"] = "alethia's (runa.alethia.index)"
    params.update(centered=centered, candidates=candidates, shortlist=shortlist)

    metrics: dict[str, float] = {}
    baselines: dict[str, float] = {}
    key = sodium.new_key()
    workdir = Path(tempfile.mkdtemp(prefix="runa-memory-index-", dir=workroot))
    try:
        with VectorFile(workdir / "vectors", key) as file:
            progress(f"sealing {n} vectors into the vector file")
            write_started = time.perf_counter()
            for start in range(0, n, 1 << 16):
                file.append(vectors[start:start + (1 << 16)])
            params["vector_file_write_s"] = round(time.perf_counter() - write_started, 1)
            params["vector_file_bytes_per_record"] = round(
                (workdir / "vectors").stat().st_size / n, 1)

            progress("building the index from the vector file")
            before = rss_bytes()
            build_started = time.perf_counter()
            index = BinaryIndex.from_blocks(file.blocks(), capacity=len(file),
                                            centered=centered)
            metrics["start_index_build_s"] = round(time.perf_counter() - build_started, 2)
            metrics["index_rss_mib"] = round((rss_bytes() - before) / 2**20, 1)
            metrics["index_bytes_per_record"] = round(
                (index.codes.nbytes + index.ids.nbytes) / len(index), 2)
            params.update(index.params())

            progress(f"searching ({params['scan']} scan, {candidates} candidates, "
                     f"shortlist {shortlist})")
            truth = exact_top(vectors, embedded.test)
            found = []
            samples = []
            for query in embedded.test:
                t0 = time.perf_counter()
                hits = index.search(query, K, file.fetch, candidates=candidates,
                                    shortlist=shortlist)
                samples.append((time.perf_counter() - t0) * 1000)
                found.append({h.row for h in hits})
            metrics["search_p50_ms"] = round(percentile(samples, 50), 2)
            params["search_p95_ms"] = round(percentile(samples, 95), 2)
            metrics["recall_at_10"] = round(recall(found, truth), 4)
            if index.native:  # what the path without the C scan would take
                index.native = False
                slow = []
                for query in embedded.test[:50]:
                    t0 = time.perf_counter()
                    index.search(query, K, file.fetch, candidates=candidates,
                                 shortlist=shortlist)
                    slow.append((time.perf_counter() - t0) * 1000)
                index.native = True
                params["numpy_scan_search_p50_ms"] = round(percentile(slow, 50), 2)
            del index
    finally:
        sodium.wipe(key)
        shutil.rmtree(workdir, ignore_errors=True)

    progress("baseline: numpy float32 brute force")
    brute = [timed(lambda q=q: np.argpartition(-(vectors @ q), K)[:K], 1)[0]  # type: ignore[misc]
             for q in embedded.test[:100 if quick else 50]]
    baselines["numpy_float_search_p50_ms"] = round(percentile(brute, 50), 2)

    if tieto:
        topic, info = tieto_index(vectors, embedded.digest, progress, cache)
        params.update(info)
        try:
            progress("baseline: tieto's index")
            rounds = embedded.test[:20 if quick else 10]
            topic.vector_search(rounds[0], K)  # warm the page cache
            slow = [timed(lambda q=q: topic.vector_search(q, K), 1)[0]  # type: ignore[misc]
                    for q in rounds]
            baselines["tieto_search_p50_ms"] = round(percentile(slow, 50), 2)
            params["tieto_records"] = n
            params["tieto_queries"] = len(rounds)
        finally:
            topic.close()
    params["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    params["elapsed_s"] = round(time.perf_counter() - started, 1)
    return {"params": params, "metrics": metrics, "baselines": baselines,
            "targets": [[t.metric, t.op, t.value] for t in targets(n)]}


def as_result(measured: dict[str, Any]) -> Result:
    result = Result("memory_index", measured["params"], measured["metrics"],
                    measured["baselines"], [Target(*t) for t in measured["targets"]])
    if "tieto_search_p50_ms" in result.baselines:
        result.metrics["faster_than_tieto"] = round(
            result.baselines["tieto_search_p50_ms"] / result.metrics["search_p50_ms"], 1)
        result.targets.append(Target("faster_than_tieto", ">", 1))
    return result


def result_key(records: int) -> str:
    """Where a run's result goes in memory.json: ``index_1m``, ``index_4m``, ..."""
    return f"index_{records // 1_000_000}m" if records % 1_000_000 == 0 else f"index_{records}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M records (else 4M)")
    parser.add_argument("--records", type=int, help="another number of records")
    parser.add_argument("--no-tieto", action="store_true", help="skip tieto's baseline")
    parser.add_argument("--tune", action="store_true",
                        help="choose the codes' centring, candidates and shortlist on the tune "
                             "queries instead of using alethia's settings")
    args = parser.parse_args(argv)
    with guarded("bench/memory_index.py"):
        measured = run(args.quick, lambda line: print(line, file=sys.stderr, flush=True),
                       records=args.records, tieto=not args.no_tieto, tune_settings=args.tune)
    print(as_result(measured).table())
    print(f"\nscan: {measured['params']['scan']} (C scan built: {native_available()}); "
          "written nowhere: bench/memory.py writes the results file")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
