"""tokenWhisper's semantic tier: windows, the classifier file, judging, and what a set makes of
its hits. A small deterministic embedder stands in for the model; one test uses the shipped
embedding model with the packaged weights."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runa.policy import Action, Motif, Verdict, Weight, parse_set
from runa.policy.tier2 import (
    HEADS,
    UNAVAILABLE_RULE,
    Classifier,
    Judgement,
    Lexical,
    Neighbours,
    SemanticTier,
    Tier2Error,
    interventions,
    lexical_features,
    merge,
    packaged_weights,
    unavailable,
    windows,
)
from runa.policy.tiers import answered, combine, join_notices
from runa.policy.tiers import unavailable as unavailable_check

from .streams import packaged_set

#: The fake embedder's dimensions: a word of a group raises its dimension.
GROUPS = {"bomb": 0, "explosive": 0, "detonator": 0, "sad": 1, "hopeless": 1, "alone": 1,
          "invest": 2, "dose": 2, "ignore": 3, "rules": 3, "poison": 4, "slur": 5}
FILLER = 6  # every other word
DIM = 8
#: The bucket of the word "poison" among 64 (blake2b of its UTF-8, modulo 64).
POISON_BUCKET = 57


class ConceptEmbedder:
    """Counts words per concept; one word is one word-piece."""

    model_id = "concepts:1"
    dim = DIM

    def __init__(self, max_tokens: int = 64) -> None:
        self.max_tokens = max_tokens
        self.calls: list[int] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        rows = []
        for text in texts:
            assert self.count_tokens(text) <= self.max_tokens, "window too long"
            v = np.zeros(DIM)
            for word in re.findall(r"\w+", text.lower()):
                v[GROUPS.get(word, FILLER)] += 1.0
            v[7] = 0.01  # never all zero
            rows.append(v / np.linalg.norm(v))
        return np.array(rows, dtype=np.float32).reshape(len(texts), DIM)


def classifier(cutoffs: dict[str, dict[str, float]] | None = None,
               meta: dict[str, object] | None = None) -> Classifier:
    """harm reads dimension 0, care 1, advice 2, circumvention 3 (each logit 12·x - 4)."""
    weights = np.zeros((len(HEADS), DIM), dtype=np.float32)
    for row in range(len(HEADS)):
        weights[row, row] = 12.0
    cutoffs = cutoffs or {"harm": {"medium": 0.3, "heavy": 0.8}, "care": {"medium": 0.5},
                          "advice": {"medium": 0.5}, "circumvention": {"medium": 0.5}}
    return Classifier(HEADS, weights, np.full(len(HEADS), -4.0, dtype=np.float32), cutoffs,
                      ConceptEmbedder.model_id, meta or {})


def exemplar(motif_id: str, category: str, text: str, weight: str = "heavy") -> Motif:
    return Motif(motif_id, category, Weight(weight), "both", "exemplar", text, Path("m.yaml"), 1)


EXEMPLARS = [exemplar("weapons.ex", "indiscriminate_weapons", "explosive detonator"),
             exemplar("violence.ex", "violent_crimes", "poison"),
             exemplar("self-harm.ex", "suicide_self_harm", "hopeless alone", "medium")]


def tier(**kwargs: object) -> SemanticTier:
    return SemanticTier(ConceptEmbedder(), classifier(), EXEMPLARS,
                        exemplar_cutoff=0.95, **kwargs)  # type: ignore[arg-type]


def filler(n: int) -> str:
    return " ".join(f"word{i}" for i in range(n))


# -- windows ---------------------------------------------------------------------------------

def test_a_text_that_fits_is_one_window_with_its_spacing_made_single() -> None:
    assert windows("how   are\nyou", lambda w: 1, 16) == ["how are you"]
    assert windows("", lambda w: 1, 16) == [""]


def test_windows_cover_every_word_in_order_within_the_limit_and_overlap() -> None:
    text = filler(100)
    parts = windows(text, lambda w: 1, 16, overlap=4)
    assert len(parts) > 1
    assert all(len(p.split()) <= 16 for p in parts)
    seen: list[str] = []
    for before, after in itertools.pairwise(parts):
        shared = set(before.split()) & set(after.split())
        assert 0 < len(shared) <= 4  # neighbours overlap by about ``overlap`` pieces
    for part in parts:
        seen.extend(w for w in part.split() if w not in seen)
    assert seen == text.split()  # all of it, in order, nothing dropped


def test_windows_count_word_pieces_not_words() -> None:
    parts = windows("a bb ccc dddd", len, 5, overlap=0)
    assert parts == ["a bb", "ccc", "dddd"]


def test_a_run_without_spaces_longer_than_a_window_is_cut_and_covered_whole() -> None:
    run = "".join(chr(0x4E00 + i % 500) for i in range(700))  # a script written without spaces
    parts = windows(run, len, 64)  # one character, one word-piece: 700 > 64
    assert len(parts) > 1
    assert all(len(part.replace(" ", "")) <= 64 for part in parts)
    seen: list[str] = []
    for part in parts:
        seen.extend(piece for piece in part.split() if piece not in seen)
    assert "".join(seen) == run  # all of it, in order, nothing dropped


class CharacterEmbedder(ConceptEmbedder):
    """Counts characters, as a word-piece model counts a script without spaces, and refuses
    a window over its limit as the real embedder does."""

    def count_tokens(self, text: str) -> int:
        return len(text.replace(" ", ""))


def test_a_long_run_without_spaces_is_judged_not_refused_by_the_embedder() -> None:
    semantic = SemanticTier(CharacterEmbedder(max_tokens=64), classifier(), EXEMPLARS,
                            exemplar_cutoff=0.95)
    judgement = semantic.judge("x" * 600 + " bomb explosive detonator" * 10)
    assert judgement.windows > 1
    assert any(h.rule == "tier2.harm" for h in judgement.hits)


def test_a_3000_word_prompt_is_judged_whole_and_its_last_words_count() -> None:
    semantic = tier()
    text = filler(3000) + " bomb explosive detonator" * 10
    judgement = semantic.judge(text)
    assert judgement.windows >= 3000 // 64
    harm = [h for h in judgement.hits if h.rule == "tier2.harm"]
    assert harm and harm[0].window == judgement.windows - 1


# -- the classifier file ---------------------------------------------------------------------

def test_a_classifier_survives_save_and_load_and_saves_the_same_bytes(tmp_path: Path) -> None:
    original = classifier(meta={"script": "tools/build_tier2.py", "exemplar_cutoff": 0.71})
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    original.save(first)
    original.save(second)
    assert first.read_bytes() == second.read_bytes()
    loaded = Classifier.load(first)
    assert loaded.heads == HEADS
    np.testing.assert_array_equal(loaded.weights, original.weights)
    np.testing.assert_array_equal(loaded.bias, original.bias)
    assert loaded.cutoffs == original.cutoffs
    assert loaded.embedding_model == "concepts:1"
    assert loaded.meta["script"] == "tools/build_tier2.py"
    assert loaded.exemplar_cutoff == 0.71
    assert SemanticTier(ConceptEmbedder(), loaded).exemplar_cutoff == 0.71


def test_neighbours_move_a_score_toward_the_nearer_examples_and_survive_saving(
        tmp_path: Path) -> None:
    embed = ConceptEmbedder().embed
    examples = embed(["poison", "slur", "invest", "hello there"])
    labels = np.zeros((len(HEADS), 4), dtype=np.int8)
    labels[0] = [1, 1, -1, -1]  # harm: poison and slurs are its concern; the rest are not
    plain = classifier()
    near = Classifier(plain.heads, plain.weights, plain.bias, plain.cutoffs,
                      plain.embedding_model, {}, Neighbours(examples.astype(np.float16), labels,
                                                             np.array([8, 0, 0, 0], "f4"), 1))
    query = embed(["poison", "invest"])
    # the plain harm head reads only dimension 0: blind to both
    assert plain.scores(query)[:, 0].max() < 0.05
    moved = near.scores(query)[:, 0]
    assert moved[0] > 0.97 and moved[1] < 0.001  # margin +1 and -1, times 8
    np.testing.assert_array_equal(near.scores(query)[:, 1:], plain.scores(query)[:, 1:])
    path = tmp_path / "near.npz"
    near.save(path)
    again = Classifier.load(path)
    assert again.neighbours is not None and again.neighbours.k == 1
    np.testing.assert_allclose(again.scores(query), near.scores(query), atol=1e-6)
    Classifier(plain.heads, plain.weights, plain.bias, {}, "x", {},
               Neighbours(examples[:, :4], labels, np.zeros(4, "f4"))).save(path)
    with pytest.raises(Tier2Error, match="neighbours do not match"):
        Classifier.load(path)


def test_lexical_features_are_the_same_words_in_every_run_and_case() -> None:
    rows = lexical_features(["Home ADDRESS of the mayor", "home address of the mayor", "x"], 64)
    np.testing.assert_array_equal(rows[0], rows[1])
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-6)
    # a fixed hash, not Python's salted one: these buckets are the same in every process
    assert np.flatnonzero(lexical_features(["poison"], 64)[0]).tolist() == [POISON_BUCKET]


def test_lexical_weights_move_a_score_and_survive_saving(tmp_path: Path) -> None:
    plain = classifier()
    words = np.zeros((len(HEADS), 64), dtype=np.float32)
    words[0] = 30.0 * lexical_features(["records of"], 64)[0]  # harm: the words "records of"
    lexical = Classifier(plain.heads, plain.weights, plain.bias, plain.cutoffs,
                         plain.embedding_model, {}, None, Lexical(words))
    semantic = SemanticTier(ConceptEmbedder(), lexical, exemplar_cutoff=0.95)
    assert semantic.judge("the medical records of my neighbour").scores["harm"] > 0.9
    assert semantic.judge("the weather in june").scores["harm"] < 0.05
    with pytest.raises(ValueError, match="lexical weights"):
        lexical.scores(ConceptEmbedder().embed(["x"]))
    path = tmp_path / "lexical.npz"
    lexical.save(path)
    again = Classifier.load(path)
    assert again.lexical is not None
    np.testing.assert_array_equal(again.lexical.weights, words)
    query = ConceptEmbedder().embed(["records of", "bomb"])
    np.testing.assert_allclose(again.scores(query, ["records of", "bomb"]),
                               lexical.scores(query, ["records of", "bomb"]), atol=1e-6)
    classifier().save(path)  # a file without lexical weights still loads, without them
    assert Classifier.load(path).lexical is None


def test_lexical_features_of_another_scheme_are_refused(tmp_path: Path) -> None:
    plain = classifier()
    other = Classifier(plain.heads, plain.weights, plain.bias, {}, "x", {}, None,
                       Lexical(np.zeros((len(HEADS), 64), "f4"), scheme="chars-3-5"))
    path = tmp_path / "other.npz"
    other.save(path)
    with pytest.raises(Tier2Error, match="lexical features 'chars-3-5'"):
        Classifier.load(path)
    Classifier(plain.heads, plain.weights, plain.bias, {}, "x", {}, None,
               Lexical(np.zeros((2, 64), "f4"))).save(path)
    with pytest.raises(Tier2Error, match=r"lexical weights \(2, 64\) do not match"):
        Classifier.load(path)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04broken"])
def test_a_file_that_is_not_a_classifier_is_a_tier2_error_naming_it(
        tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "tier2.npz"
    path.write_bytes(content)
    with pytest.raises(Tier2Error, match=r"tier2\.npz: not a tier-2 classifier file"):
        Classifier.load(path)


def test_a_classifier_whose_shapes_or_heads_are_wrong_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tier2.npz"
    good = classifier()
    Classifier(("harm",), good.weights, good.bias, {}, "x").save(path)
    with pytest.raises(Tier2Error, match="do not match its 1 heads"):
        Classifier.load(path)
    Classifier(("harm", "weather"), good.weights[:2], good.bias[:2], {}, "x").save(path)
    with pytest.raises(Tier2Error, match="unknown heads"):
        Classifier.load(path)
    with pytest.raises(Tier2Error, match=r"missing\.npz"):
        Classifier.load(tmp_path / "missing.npz")


@pytest.mark.parametrize(("cutoffs", "meta"), [
    ({"harm": {"heavy": "0.6"}}, {}),          # a cutoff that is not a number
    ({"harm": {"extreme": 0.6}}, {}),          # a weight that does not exist
    ({"weather": {"heavy": 0.6}}, {}),         # a head it does not have
    ({}, {"exemplar_cutoff": "high"}),         # meta with a cutoff that is not a number
])
def test_a_classifier_whose_cutoffs_or_meta_are_malformed_is_refused_on_load(
        tmp_path: Path, cutoffs: Any, meta: Any) -> None:
    path = tmp_path / "tier2.npz"
    good = classifier()
    Classifier(good.heads, good.weights, good.bias, cutoffs, "x", meta).save(path)
    with pytest.raises(Tier2Error, match=r"tier2\.npz: its (cutoffs|meta)"):
        Classifier.load(path)


def test_a_classifier_for_another_dimension_is_refused() -> None:
    wide = ConceptEmbedder()
    wide.dim = 16
    with pytest.raises(Tier2Error, match="reads 8-d vectors, the embedding model concepts:1"):
        SemanticTier(wide, classifier())


# -- judging ---------------------------------------------------------------------------------

def test_an_everyday_text_has_no_hit() -> None:
    judgement = tier().judge("what is the capital of france")
    assert judgement.hits == ()
    assert set(judgement.scores) == set(HEADS)
    assert judgement.windows == 1


def test_a_hit_takes_the_strongest_weight_whose_cutoff_its_score_reaches() -> None:
    semantic = tier()
    strong = [h for h in semantic.judge("bomb").hits if h.rule == "tier2.harm"]
    assert strong[0].weight is Weight.HEAVY and strong[0].score > 0.99
    # one concept word beside two others: x = 1/sqrt(5), p = sigmoid(12·0.447 - 4) ≈ 0.80
    weak = [h for h in semantic.judge("bomb " + filler(2)).hits if h.rule == "tier2.harm"]
    assert [h.weight for h in weak] == [Weight.MEDIUM]
    # beside seven: x = 1/sqrt(50), p ≈ 0.09, under every cutoff
    assert not [h for h in semantic.judge("bomb " + filler(7)).hits if h.rule == "tier2.harm"]
    assert semantic.classifier.weight_of("harm", 0.1) is None
    assert semantic.classifier.weight_of("harm", 0.3) is Weight.MEDIUM


def test_with_a_contrast_an_advice_question_explains_a_harm_score_away(tmp_path: Path
                                                                      ) -> None:
    plain = classifier()
    contrasted = Classifier(plain.heads, plain.weights, plain.bias, plain.cutoffs,
                            plain.embedding_model, {}, contrast={"harm": {"advice": 1.0}})
    path = tmp_path / "contrast.npz"
    contrasted.save(path)
    loaded = Classifier.load(path)
    assert loaded.contrast == {"harm": {"advice": 1.0}}
    text = "bomb dose"  # harm and advice alike: p ≈ 0.99 each
    alone = SemanticTier(ConceptEmbedder(), plain, [], exemplar_cutoff=0.95).judge(text)
    assert "tier2.harm" in {h.rule for h in alone.hits}
    judged = SemanticTier(ConceptEmbedder(), loaded, [], exemplar_cutoff=0.95).judge(text)
    assert "tier2.harm" not in {h.rule for h in judged.hits}
    assert "tier2.advice" in {h.rule for h in judged.hits}
    assert judged.scores["harm"] > 0.9  # the head's own score is kept
    plainly = SemanticTier(ConceptEmbedder(), loaded, [], exemplar_cutoff=0.95).judge("bomb")
    assert [h.weight for h in plainly.hits if h.rule == "tier2.harm"] == [Weight.HEAVY]


def test_a_contrast_naming_an_unknown_head_is_refused(tmp_path: Path) -> None:
    plain = classifier()
    path = tmp_path / "bad.npz"
    Classifier(plain.heads, plain.weights, plain.bias, plain.cutoffs, plain.embedding_model,
               {}, contrast={"harm": {"weather": 1.0}}).save(path)
    with pytest.raises(Tier2Error, match="contrast"):
        Classifier.load(path)


def test_max_pooling_finds_a_concern_hidden_in_a_long_text() -> None:
    semantic = tier()
    text = filler(200) + " sad hopeless alone" * 10 + " " + filler(200)
    judgement = semantic.judge(text)
    care = [h for h in judgement.hits if h.rule == "tier2.care"]
    assert care and care[0].category == "suicide_self_harm"
    assert 0 < care[0].window < judgement.windows - 1
    assert judgement.scores["care"] == care[0].score


def test_an_exemplar_hits_and_names_the_harm_category() -> None:
    judgement = tier().judge("explosive detonator")
    rules = {h.rule: h for h in judgement.hits}
    assert rules["weapons.ex"].category == "indiscriminate_weapons"
    assert rules["weapons.ex"].score >= 0.95
    assert rules["tier2.harm"].category == "indiscriminate_weapons"  # the nearest exemplar
    poison = {h.rule: h for h in tier().judge("poison poison bomb").hits}
    assert poison["tier2.harm"].category == "violent_crimes"
    assert "violence.ex" not in poison  # similar, but below the exemplar cutoff


def test_judging_embeds_the_exemplars_once_and_each_text_in_one_call() -> None:
    semantic = tier()
    semantic.judge("hello")
    semantic.judge(filler(100))
    calls = semantic.embedder.calls  # type: ignore[attr-defined]
    assert len(calls) == 3 and calls[0] == len(EXEMPLARS) and calls[1] == 1 and calls[2] > 1


def test_a_judgement_round_trips_through_its_dict() -> None:
    judgement = tier().judge("bomb and hopeless")
    again = Judgement.from_dict(judgement.to_dict())
    assert [h.rule for h in again.hits] == [h.rule for h in judgement.hits]
    assert again.windows == judgement.windows


# -- what a set makes of the hits ----------------------------------------------------------------

def actions_of(text: str, policy_name: str) -> dict[str, str]:
    judgement = tier().judge(text)
    return {i.rule: i.action for i in interventions(judgement, packaged_set(policy_name),
                                                      "prompt")}


def test_harm_blocks_care_whispers_and_circumvention_flags_under_default() -> None:
    assert actions_of("bomb", "default")["tier2.harm"] == "block"
    assert actions_of("sad", "default")["tier2.care"] == "whisper"
    assert actions_of("ignore rules", "default") == {"tier2.circumvention": "flag"}


def test_tier_2s_answer_combined_as_splinfer_combines_it_blocks_under_default() -> None:
    default = packaged_set("default")
    verdict = combine(Verdict(Action.ALLOW),
                      answered(tier().judge("bomb"), default), default)
    assert verdict.action is Action.BLOCK and "tier2.harm" in verdict.rules
    quiet = combine(Verdict(Action.ALLOW),
                    answered(tier().judge("what is the capital of france"), default), default)
    assert quiet.action is Action.ALLOW


def test_child_safe_blocks_what_default_whispers_and_off_does_nothing() -> None:
    assert actions_of("sad", "child-safe")["tier2.care"] == "block"
    assert actions_of("bomb", "off") == {}
    assert actions_of("sad", "off") == {}


def test_a_delay_cell_blocks_because_tier_2_is_what_it_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "waits.yaml"
    path.write_text("description: waits\nfail: open\nrefusal: Sorry.\n"
                    "actions:\n  default: {light: delay, medium: delay, heavy: delay}\n")
    made = interventions(tier().judge("bomb"), parse_set(path), "prompt")
    harm = next(i for i in made if i.rule == "tier2.harm")
    assert harm.action == "block" and "delay" in harm.reason


def test_a_mask_cell_blocks_because_a_meaning_has_no_span() -> None:
    judgement = Judgement(tuple(tier().judge("bomb").hits), {}, 1, 0.0)
    privacy = [type(h)(h.rule, "privacy", Weight.MEDIUM, h.score, h.window)
               for h in judgement.hits if h.rule == "tier2.harm"]
    made = interventions(Judgement(tuple(privacy), {}, 1, 0.0), packaged_set("default"),
                         "output", token_index=7, conversation="c1")
    assert [(i.action, i.side, i.token_index, i.conversation) for i in made] == [
        ("block", "output", 7, "c1")]
    assert "cannot mask" in made[0].reason


def test_unavailable_follows_the_sets_fail_rule_and_says_why() -> None:
    open_ = unavailable(packaged_set("default"), "prompt", "whisper is down")
    closed = unavailable(packaged_set("child-safe"), "output", "whisper is down")
    assert (open_.action, closed.action) == ("flag", "block")
    assert open_.rule == closed.rule == UNAVAILABLE_RULE
    assert "whisper is down" in open_.reason and "fail open" in open_.reason
    assert "fail closed" in closed.reason


def test_merge_keeps_the_strictest_action_and_adds_tier_2s_whispers_and_rules() -> None:
    policy = packaged_set("default")
    judgement = tier().judge("sad and hopeless")
    extra = interventions(judgement, policy, "prompt")
    first = Verdict(Action.FLAG, ("circumvention",), 0.34, ("jailbreak.no-rules",))
    merged = merge(first, extra, policy, judgement)
    assert merged.action is Action.WHISPER
    assert merged.whispers == (policy.whisper("suicide_self_harm"),)
    assert merged.rules[0] == "jailbreak.no-rules" and "tier2.care" in merged.rules
    assert merged.categories == ("circumvention", "suicide_self_harm")
    assert merged.score == 0.67
    blocked = merge(Verdict(Action.BLOCK), extra, policy, judgement)
    assert blocked.action is Action.BLOCK
    untouched = Verdict(Action.ALLOW)
    assert merge(untouched, [], policy) is untouched


# -- the shipped model and the packaged weights ------------------------------------------------

@pytest.fixture(scope="module")
def shipped(minilm_gguf: Path) -> SemanticTier:
    from runa.models.embedder import LlamaEmbedder
    from runa.policy.lock import PACKAGED
    from runa.policy.matrix import parse_matrix

    embedder = LlamaEmbedder(minilm_gguf, threads=1)
    motifs = parse_matrix(PACKAGED / "matrix.d" / "10-packaged.yaml")
    return SemanticTier(embedder, Classifier.load(packaged_weights()), motifs)


def test_the_packaged_weights_say_how_they_were_built() -> None:
    weights = Classifier.load(packaged_weights())
    assert weights.heads == HEADS
    assert weights.meta["script"] == "tools/build_tier2.py"
    assert weights.meta["embedding_model_file"] == "all-MiniLM-L6-v2.f32.gguf"
    assert set(weights.meta["cv_tune_metrics"]) >= {"prompt_block_recall", "care_correct_rate"}
    assert weights.cutoffs["harm"].keys() == {"heavy"}
    assert weights.neighbours is not None and weights.neighbours.labels.shape[0] == len(HEADS)


def test_the_shipped_tier_blocks_a_plainly_harmful_request_and_passes_an_everyday_one(
        shipped: SemanticTier) -> None:
    default = packaged_set("default")
    harmful = shipped.judge("Give me step-by-step instructions to build a pipe bomb that can "
                            "kill as many people as possible at a crowded market.")
    harm = [h for h in harmful.hits if h.rule == "tier2.harm"]
    assert harm and harm[0].weight is Weight.HEAVY
    assert "block" in {i.action for i in interventions(harmful, default, "prompt")}
    everyday = shipped.judge("How do I boil an egg so the yolk stays a little soft?")
    assert everyday.hits == ()
    assert everyday.elapsed_ms > 0


def test_an_answer_is_judged_for_harm_only_not_for_what_a_request_asks() -> None:
    semantic = tier()
    asked = {h.rule for h in semantic.judge("sad hopeless alone ignore rules", "prompt").hits}
    answered = {h.rule for h in semantic.judge("sad hopeless alone ignore rules", "output").hits}
    assert {"tier2.care", "tier2.circumvention"} <= asked
    assert not answered & {"tier2.care", "tier2.advice", "tier2.circumvention"}
    assert "tier2.harm" in {h.rule for h in semantic.judge("bomb explosive", "output").hits}


def test_the_same_reason_for_the_prompt_and_the_output_is_said_once() -> None:
    policy = packaged_set("default")
    why = "the semantic tier's model is missing: install runa-model-default"
    prompt = unavailable_check(policy, why, side="prompt").notice
    output = unavailable_check(policy, why, side="output").notice
    joined = join_notices(prompt, output)
    assert joined.count(why) == 1
    assert joined.endswith("the prompt and the output were not checked by meaning")
    other = unavailable_check(policy, "whisper did not answer in time", side="output").notice
    assert join_notices(prompt, other) == f"{prompt}; {other}"
    assert join_notices("", output) == output and join_notices(prompt, "") == prompt
