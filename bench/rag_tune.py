"""Tune tieto's fusion on the *tune* half of the labelled set only (never on ``test``).

Runs the vector and full-text searches once per tune query (depth 100), scores every
candidate by both methods, then scores every combination of the fusion settings
offline: for reciprocal rank fusion the constant ``rrf_k``, the weight of the
full-text list and the depth of each list; for z-score fusion (tieto's default) the
full-text weight and the depth. Prints each method's best settings by hybrid MRR@10.
Uses the eval index bench/rag.py built (run it first).

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
from runa.tieto.fusion import rrf, zscore  # noqa: E402

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
    args.quick, args.rrf_k, args.candidates, args.fts_weight = True, 1.0, 50, 0.2
    _, labels = load_labels()
    tune = [q for q in labels if q["split"] == "tune"]  # the test half is never looked at
    embedder = load_embedder()
    tieto, _ = eval_index(package_root(), embedder, args)
    index = tieto.open("faq")
    entry_of = {cid: row.meta.get("entry") for cid, row in
                index.chunks([r[0] for r in index.db.execute("SELECT id FROM chunks")]).items()}
    vectors = embedder.embed([q["query"] for q in tune])
    vec_lists, fts_lists, cosines, bm25s = [], [], [], []
    for q, v in zip(tune, vectors, strict=True):
        match = fts_query(q["query"])
        vec = index.vector_search(v, DEPTH)
        words, of_vec = index.fts_search_with(match, DEPTH, [i for i, _ in vec])
        vec_lists.append([i for i, _ in vec])
        fts_lists.append([i for i, _ in words])
        everything = [i for i, _ in vec] + [i for i, _ in words]
        cosines.append({i: 1.0 - d for i, d in index.distances(set(everything), v).items()})
        bm25s.append({i: -s for i, s in [*of_vec.items(), *words]})
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
    for (score, at5), k, w, depth in results[:10]:
        print(f"rrf    mrr {score:.4f} r@5 {at5:.4f}  rrf_k={k} fts_weight={w} depth={depth}")
    by_z = []
    for w, depth in itertools.product((0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5),
                                      (10, 20, 30, 50, 100)):
        fused = []
        for v, f, cos, bm in zip(vec_lists, fts_lists, cosines, bm25s, strict=True):
            ids = set(v[:depth]) | set(f[:depth])
            fused.append([x.id for x in zscore(
                {"vector": {i: cos[i] for i in ids}, "fts": {i: bm.get(i, 0.0) for i in ids}},
                {"vector": v[:depth], "fts": f[:depth]}, {"vector": 1.0 - w, "fts": w})])
        by_z.append((mrr(as_entries(fused), relevant), w, depth))
    by_z.sort(key=lambda r: -r[0][0])
    for (score, at5), w, depth in by_z[:10]:
        print(f"zscore mrr {score:.4f} r@5 {at5:.4f}  fts_weight={w} depth={depth}")
    tieto.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
