"""The safety bench's baselines (issue 20): each threshold is the tune half's best recall at a
benign false-positive rate of at most 0.05, and the keyword list learns what harmful prompts
say that benign ones do not."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from safety_baselines import (
    KeywordList,
    choose_threshold,
    keyword_scores,
    knn_scores,
    rates,
    terms,
)


def test_the_threshold_keeps_the_benign_fpr_at_most_five_percent():
    benign = [float(i) for i in range(100)]  # 0 … 99: flagging above 94 flags 5 of them
    harmful = [10.0, 90.0, 94.5, 97.0, 120.0]
    chosen = choose_threshold(harmful, benign)
    assert chosen.value == 94.5
    assert chosen.fpr == pytest.approx(0.05)
    assert chosen.recall == pytest.approx(3 / 5)
    assert rates(94.0, harmful, benign)[1] > 0.05  # one step lower breaks the limit


def test_the_threshold_has_the_highest_recall_and_among_equals_the_fewest_false_positives():
    benign = [0.0] * 19 + [0.5]
    harmful = [0.6, 0.7, 0.8]
    chosen = choose_threshold(harmful, benign)
    # 0.5 would also flag every harmful prompt (fpr 0.05, allowed); 0.6 does with none
    assert (chosen.value, chosen.recall, chosen.fpr) == (0.6, 1.0, 0.0)


def test_when_every_harmful_score_is_also_benign_nothing_is_flagged():
    benign = [1.0, 2.0, 3.0]
    chosen = choose_threshold([3.0, 3.0], benign)  # flagging at 3 flags a third of benign
    assert chosen.recall == 0.0 and chosen.fpr == 0.0
    assert chosen.value > 3.0


def test_keywords_are_what_harmful_prompts_share_and_benign_ones_lack():
    harmful = [f"how do I make a bomb to hurt person {i}" for i in range(6)]
    benign = [f"how do I make a cake for person {i}" for i in range(6)]
    keywords = KeywordList.learn(harmful, benign, top_n=10, min_count=3).keywords
    assert {"bomb", "hurt", "a bomb"} <= keywords
    assert not keywords & {"how", "make", "person", "cake", "how do"}


def test_the_keyword_score_counts_the_listed_words_and_pairs_a_prompt_holds():
    keywords = KeywordList(frozenset({"bomb", "pipe bomb", "poison"}))
    assert keywords.score("How do I build a PIPE BOMB?") == 2
    assert keywords.score("bomb, bomb, bomb") == 1  # present or not, not how often
    assert keywords.score("a pipe and a bombastic speech") == 0
    assert "pipe bomb" in terms("a pipe bomb") and "a pipe" in terms("a pipe bomb")


def test_tune_keyword_scores_come_from_lists_learned_without_the_prompt():
    harmful = [f"unique{i} attack plan" for i in range(10)]
    benign = [f"garden walk number {i}" for i in range(10)]
    tune_h, tune_b, test, final = keyword_scores(harmful, benign, ["unique3 attack plan"])
    assert "attack" in final.keywords
    assert all(s >= 1 for s in tune_h) and tune_b == [0] * 10
    # a word only one prompt holds is never a keyword of the list that scores it
    assert test == [final.score("unique3 attack plan")]
    assert not any(k.startswith("unique") for k in final.keywords)


def test_knn_score_is_nearness_to_harmful_minus_nearness_to_benign_without_itself():
    harmful = np.array([[1.0, 0.0], [0.8, 0.6]], dtype=np.float32)
    benign = np.array([[0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    queries = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    near = knn_scores(queries, harmful, benign, k=1)
    assert near[0] == pytest.approx(1.0 - 0.6) and near[1] == pytest.approx(0.6 - 1.0)
    # the first query is harmful row 0 itself: its nearest harmful is then row 1 (0.8)
    left_out = knn_scores(queries[:1], harmful, benign, k=1, self_harmful=[0],
                          self_benign=[-1])
    assert left_out[0] == pytest.approx(0.8 - 0.6)
