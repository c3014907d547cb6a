"""Fusion of the vector and full-text rankings: z-score (the default) and RRF."""

from __future__ import annotations

import pytest

from runa.tieto.fusion import rrf, zscore

W = {"vector": 0.8, "fts": 0.2}


def test_a_clear_vector_winner_survives_weak_word_disagreement() -> None:
    scores = {"vector": {1: 0.90, 2: 0.60, 3: 0.58, 4: 0.55},
              "fts": {1: 2.0, 2: 3.0, 3: 0.0, 4: 0.0}}
    fused = zscore(scores, {"vector": [1, 2, 3, 4], "fts": [2, 1]}, W)
    assert [f.id for f in fused][:2] == [1, 2]


def test_words_decide_between_vector_near_ties() -> None:
    """RRF would keep the vector order (rank 1 beats rank 2); scores let the words decide."""
    scores = {"vector": {1: 0.700, 2: 0.699, 3: 0.40, 4: 0.35},
              "fts": {1: 0.0, 2: 6.0, 3: 0.5, 4: 0.0}}
    rankings = {"vector": [1, 2, 3, 4], "fts": [2, 3]}
    assert zscore(scores, rankings, W)[0].id == 2
    assert rrf(rankings, k=1, weights={"vector": 1.0, "fts": 0.2})[0].id == 1


def test_ranks_and_scores_are_reported() -> None:
    scores = {"vector": {1: 0.9, 2: 0.5}, "fts": {1: 1.0, 2: 3.0}}
    fused = zscore(scores, {"vector": [1, 2], "fts": [2]}, {"vector": 1.0, "fts": 0.0})
    assert [(f.id, f.ranks) for f in fused] == [(1, {"vector": 1}), (2, {"vector": 2, "fts": 1})]
    assert fused[0].score == pytest.approx(1.0) and fused[1].score == pytest.approx(-1.0)


def test_a_method_whose_scores_are_all_equal_adds_nothing() -> None:
    scores = {"vector": {1: 0.2, 2: 0.9, 3: 0.5}, "fts": {1: 1.0, 2: 1.0, 3: 1.0}}
    fused = zscore(scores, {"vector": [2, 3, 1], "fts": [1, 2, 3]}, W)
    assert [f.id for f in fused] == [2, 3, 1]


def test_a_candidate_without_a_score_counts_as_the_lowest() -> None:
    scores = {"vector": {1: 0.9, 2: 0.8, 3: 0.1}, "fts": {2: 5.0, 3: 1.0}}
    fused = zscore(scores, {"vector": [1, 2, 3]}, {"vector": 0.5, "fts": 0.5})
    assert [f.id for f in fused] == [2, 1, 3]


def test_rrf_orders_by_summed_reciprocal_ranks() -> None:
    fused = rrf({"vector": [1, 2, 3], "fts": [3, 4]}, k=10)
    assert [f.id for f in fused][:2] == [3, 1]
    assert fused[0].ranks == {"vector": 3, "fts": 1}
    assert fused[0].score == pytest.approx(1 / 13 + 1 / 11)
