"""Tune tieto's fusion on the *tune* half of the labelled set only (never on ``test``).

Runs the vector and full-text searches once per tune query (depth 100), then scores
every combination of the fusion settings offline: the RRF constant ``rrf_k``, the
weight of the full-text list and the depth of each list. Prints the grid's best
settings by hybrid MRR@10. Uses the eval index bench/rag.py built (run it first).

    python bench/rag_tune.py [--chunk-tokens N --overlap N]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from rag import K_EVAL, eval_index, load_embedder
from rag_corpus import load_labels, package_root

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runa.tieto.fts import fts_query  # noqa: E402
from runa.tieto.fusion import rrf  # noqa: E402

DEPTH = 100


def mrr(rankings: list[list[str]], relevant: list[str]) -> tuple[float, float]:
    rr, at5 = 0.0, 0
    for ranked, want in zip(rankings, relevant, strict=True):
        for i, entry in enumerate(ranked[:K_EVAL], 1):
            if entry == want:
                rr += 1 / i
                at5 += i <= 5
                break
    return rr / len(relevant), at5 / len(relevant)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-tokens", type=int, default=254)
    parser.add_argument("--overlap", type=int, default=32)
    args = parser.parse_args()
    args.quick, args.rrf_k, args.candidates, args.fts_weight = True, 1.0, 50, 0.4
    _, labels = load_labels()
    tune = [q for q in labels if q["split"] == "tune"]  # the test half is never looked at
    embedder = load_embedder()
    tieto, _ = eval_index(package_root(), embedder, args)
    index = tieto.open("faq")
    entry_of = {cid: row.meta.get("entry") for cid, row in
                index.chunks([r[0] for r in index.db.execute("SELECT id FROM chunks")]).items()}
    vectors = embedder.embed([q["query"] for q in tune])
    vec_lists, fts_lists = [], []
    for q, v in zip(tune, vectors, strict=True):
        vec_lists.append([i for i, _ in index.vector_search(v, DEPTH)])
        fts_lists.append([i for i, _ in index.fts_search(fts_query(q["query"]), DEPTH)])
    relevant = [q["relevant"] for q in tune]
    as_entries = lambda lists: [[entry_of[i] for i in ids] for ids in lists]  # noqa: E731
    print(f"vector  mrr/r@5 {mrr(as_entries(vec_lists), relevant)}")
    print(f"fts     mrr/r@5 {mrr(as_entries(fts_lists), relevant)}")
    results = []
    for k, w, depth in itertools.product((1, 2, 5, 10, 20, 30, 60, 100),
                                         (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
                                         (10, 20, 30, 50, 100)):
        fused = [[f.id for f in rrf({"vector": v[:depth], "fts": f[:depth]}, k,
                                    {"vector": 1.0, "fts": w})]
                 for v, f in zip(vec_lists, fts_lists, strict=True)]
        results.append((mrr(as_entries(fused), relevant), k, w, depth))
    results.sort(key=lambda r: -r[0][0])
    for (score, at5), k, w, depth in results[:15]:
        print(f"hybrid mrr {score:.4f} r@5 {at5:.4f}  rrf_k={k} fts_weight={w} depth={depth}")
    tieto.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
