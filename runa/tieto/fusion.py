"""Reciprocal rank fusion: combine ranked lists without comparing their scores.

Cosine distances and BM25 scores live on different scales; RRF uses only ranks:
``score(d) = Σ_lists weight / (k + rank(d))`` with ranks from 1 (Cormack et al.,
2009). A larger ``k`` flattens the curve, so agreement between the lists weighs
more than one list's first place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class Fused:
    id: int
    score: float
    ranks: dict[str, int] = field(default_factory=dict)


def rrf(rankings: Mapping[str, Sequence[int]], k: float = 60.0,
        weights: Mapping[str, float] | None = None) -> list[Fused]:
    """Ids from every list, best fused score first (ties: the order of first appearance)."""
    fused: dict[int, Fused] = {}
    for name, ids in rankings.items():
        weight = 1.0 if weights is None else weights.get(name, 1.0)
        for rank, item in enumerate(ids, start=1):
            entry = fused.setdefault(item, Fused(item, 0.0))
            if name not in entry.ranks:
                entry.ranks[name] = rank
                entry.score += weight / (k + rank)
    order = {item: i for i, item in enumerate(fused)}
    return sorted(fused.values(), key=lambda f: (-f.score, order[f.id]))
