"""Tier 1 on a token stream: what the person sees, what the model is fed, what is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from runa.policy import RELEASE_ONE, Action, PassGate, Tier1
from runa.policy.sets import parse_set

from .streams import WordTokenizer, matrix_of, packaged_set, run, tier

PRIVACY = """\
- id: privacy.home-address
  category: privacy
  weight: medium
  phrase: find their home address
"""
KILL = """\
- id: kill
  category: violent_crimes
  weight: heavy
  phrase: kill
"""


def test_a_phrase_split_over_three_tokens_is_held_and_masked_before_any_is_shown(
        tmp_path: Path) -> None:
    gate_of, tok = tier(tmp_path, PRIVACY)
    gate = gate_of.gate("conv-1")
    pieces = ["Well", ",", " you", " can", " find", " their", " home", " add", "ress",
              " online", "."]
    stream = run(gate, tok, pieces)
    assert tok.text(stream.shown) == "Well, you can […] online."
    assert stream.model == stream.shown  # the model continues from what the person saw
    # the tokens before the phrase streamed at once; none of the phrase's ever did
    assert stream.shown_after[:4] == [1, 2, 3, 4]
    assert stream.shown_after[4:9] == [4, 4, 4, 4, 4]
    [event] = gate.interventions
    assert (event.rule, event.action, event.token_index, event.side) == (
        "privacy.home-address", "mask", 4, "output")
    assert event.conversation == "conv-1"


def test_nothing_is_held_while_no_motif_could_be_starting(tmp_path: Path) -> None:
    gate_of, tok = tier(tmp_path, PRIVACY)
    stream = run(gate_of.gate(), tok, ["The", " sea", " is", " calm", " today", "."])
    assert stream.shown_after == [1, 2, 3, 4, 5, 6]
    assert all(step.release == 1 and not step.take_back for step in stream.steps[:6])


def test_a_partial_match_that_breaks_off_is_released_then(tmp_path: Path) -> None:
    gate_of, tok = tier(tmp_path, PRIVACY)
    stream = run(gate_of.gate(), tok, ["We", " find", " their", " home", " quickly", "."])
    assert stream.shown_after == [1, 1, 1, 1, 5, 6]
    assert tok.text(stream.shown) == "We find their home quickly."


def test_a_match_ending_the_answer_is_masked_at_finish(tmp_path: Path) -> None:
    gate_of, tok = tier(tmp_path, PRIVACY)
    stream = run(gate_of.gate(), tok, ["I", " find", " their", " home", " address"])
    assert tok.text(stream.shown) == "I […]"


def test_block_takes_the_phrase_back_and_ends_with_the_refusal(tmp_path: Path) -> None:
    gate_of, tok = tier(tmp_path, "- id: bomb\n  category: indiscriminate_weapons\n"
                        "  weight: heavy\n  phrase: build a bomb\n")
    gate = gate_of.gate()
    stream = run(gate, tok, ["First", " build", " a", " bomb", " like", " this"])
    refusal = packaged_set("default").refusal
    assert tok.text(stream.shown) == "First " + refusal
    assert stream.stopped and stream.steps[-1].stop
    assert stream.steps[-1].reason == "policy default: indiscriminate_weapons"
    assert [e.action for e in gate.interventions] == ["block"]


def test_whisper_lets_the_answer_through_and_keeps_a_note_for_the_next_turn(
        tmp_path: Path) -> None:
    gate_of, tok = tier(tmp_path, "- id: end\n  category: suicide_self_harm\n  weight: heavy\n"
                        "  phrase: end my life\n")
    gate = gate_of.gate()
    stream = run(gate, tok, ["I", " want", " to", " end", " my", " life", "."])
    assert tok.text(stream.shown) == "I want to end my life."
    assert [e.action for e in gate.interventions] == ["whisper"]
    [note] = gate.whispers
    assert "crisis line" in note


def test_flag_records_and_changes_nothing(tmp_path: Path) -> None:
    gate_of, tok = tier(tmp_path, "- id: vote\n  category: elections\n  weight: medium\n"
                        "  phrase: vote twice\n")
    gate = gate_of.gate()
    stream = run(gate, tok, ["You", " cannot", " vote", " twice", "."])
    assert tok.text(stream.shown) == "You cannot vote twice."
    assert [(e.rule, e.action, e.token_index) for e in gate.interventions] == [
        ("vote", "flag", 2)]


@pytest.mark.parametrize(("pieces", "fires"), [
    (["Her", " sk", "ills", " grew"], False),
    (["A", " kill", "er", " whale"], False),
    (["Don't", " ki", "ll", " it"], True),
    (["KILL", "!"], True),
])
def test_phrases_match_on_word_boundaries_whatever_the_case(
        tmp_path: Path, pieces: list[str], fires: bool) -> None:
    gate_of, tok = tier(tmp_path, KILL)
    gate = gate_of.gate()
    stream = run(gate, tok, pieces)
    assert bool(gate.interventions) is fires
    assert stream.stopped is fires


def test_the_off_set_is_a_pass_through(tmp_path: Path) -> None:
    gate_of, tok = tier(tmp_path, KILL, policy="off")
    gate = gate_of.gate()
    assert isinstance(gate, PassGate)
    assert [gate.feed(tok.id_of(p), p.encode()) for p in (" kill", " now")] == [RELEASE_ONE] * 2
    assert gate.interventions == ()


TOKENS = """\
- id: kill.them
  category: violent_crimes
  weight: heavy
  tokens: {tokenizer: "%s", ids: [900, 901], phrase: kill them}
"""


def test_a_tokens_motif_of_another_tokenizer_is_rebuilt_from_its_phrase(tmp_path: Path) -> None:
    gate_of, tok = tier(tmp_path, TOKENS % "sha256:another-model")
    assert gate_of.problems == ()
    gate = gate_of.gate()
    stream = run(gate, tok, ["Then", " kill", " them", " all"])
    assert stream.stopped and [e.rule for e in gate.interventions] == ["kill.them"]
    assert gate.interventions[0].token_index == 1


def test_a_tokens_motif_of_this_tokenizer_matches_its_ids(tmp_path: Path) -> None:
    tok = WordTokenizer()
    a, b = tok.id_of(" x"), tok.id_of(" y")
    text = TOKENS.replace("[900, 901]", f"[{a}, {b}]") % tok.fingerprint
    gate_of, _ = tier(tmp_path, text, tokenizer=tok)
    stream = run(gate_of.gate(), tok, ["one", " x", " y"])
    assert stream.stopped and " x" not in tok.text(stream.shown)


def test_a_tokens_motif_that_cannot_be_rebuilt_is_reported_not_dropped(tmp_path: Path) -> None:
    text = ("- id: orphan\n  category: hate\n  weight: heavy\n"
            "  tokens: {tokenizer: other, ids: [1, 2]}\n")
    gate_of, _ = tier(tmp_path, text)
    [problem] = gate_of.problems
    assert (problem.path.name, problem.line, problem.field) == ("m.yaml", 1, "tokens.tokenizer")
    assert "'orphan' is bound to tokenizer other" in str(problem)
    assert "no phrase to rebuild" in str(problem)


def test_a_phrase_that_tokenizes_to_nothing_is_reported(tmp_path: Path) -> None:
    class Mute(WordTokenizer):
        def tokenize(self, text: str) -> list[int]:
            return []

    text = TOKENS % "other"
    gate_of = Tier1(matrix_of(tmp_path, text), packaged_set("default"), Mute())
    [problem] = gate_of.problems
    assert problem.field == "tokens.phrase" and "tokenizes to nothing" in str(problem)


def delay_set(tmp_path: Path, fail: str) -> Path:
    path = tmp_path / f"delay-{fail}.yaml"
    path.write_text(f"description: d\nrefusal: Stopped.\nfail: {fail}\n"
                    "actions:\n  default: delay\n")
    return path


@pytest.mark.parametrize(("fail", "action", "stopped"), [("closed", "block", True),
                                                         ("open", "flag", False)])
def test_delay_without_the_semantic_tier_follows_the_fail_rule(
        tmp_path: Path, fail: str, action: str, stopped: bool) -> None:
    tok = WordTokenizer()
    tier1 = Tier1(matrix_of(tmp_path, KILL), parse_set(delay_set(tmp_path, fail)), tok)
    gate = tier1.gate()
    stream = run(gate, tok, ["I", " kill", " time"])
    assert stream.stopped is stopped
    [event] = gate.interventions
    assert event.action == action
    assert event.reason == f"delay without the semantic tier: fail {fail}"


def test_an_intervention_carries_fields_for_the_journal_and_never_the_text(
        tmp_path: Path) -> None:
    gate_of, tok = tier(tmp_path, PRIVACY)
    gate = gate_of.gate("c9")
    run(gate, tok, ["find", " their", " home", " address"])
    fields = gate.interventions[0].fields()
    assert fields == {"RUNA_EVENT": "policy_intervention", "RUNA_RULE": "privacy.home-address",
                      "RUNA_CATEGORY": "privacy", "RUNA_WEIGHT": "medium",
                      "RUNA_ACTION": "mask", "RUNA_SIDE": "output", "RUNA_POLICY": "default",
                      "RUNA_TOKEN_INDEX": "0", "RUNA_CONVERSATION": "c9"}
    assert "address" not in str(gate.interventions[0].to_dict()).replace("home-address", "")


def test_regex_matches_are_held_while_they_could_complete_and_masked(tmp_path: Path) -> None:
    gate_of, tok = tier(tmp_path, "- id: ssn\n  category: privacy\n  weight: medium\n"
                        "  regex: '\\d{3}-\\d{2}-\\d{4}'\n  replacement: '[number]'\n")
    gate = gate_of.gate()
    stream = run(gate, tok, ["It", " is", " 123-45-6789", "."])
    assert tok.text(stream.shown) == "It is [number]."
    gate = gate_of.gate()
    stream = run(gate, tok, ["It", " is", " 123", "-", "45", "-", "6789", "."])
    assert tok.text(stream.shown) == "It is [number]."
    assert stream.shown_after[:7] == [1, 2, 2, 2, 2, 2, 2]  # no digit of it was ever shown
    assert stream.model == stream.shown
    assert [(e.action, e.token_index) for e in gate.interventions] == [("mask", 2)]
    gate = gate_of.gate()  # a partial match that breaks off is released then
    stream = run(gate, tok, ["Call", " 123", "-", "45", " now", "."])
    assert tok.text(stream.shown) == "Call 123-45 now."
    assert stream.shown_after == [1, 1, 1, 1, 5, 6]


def test_a_regex_match_still_open_at_the_end_is_judged_at_finish(tmp_path: Path) -> None:
    gate_of, tok = tier(tmp_path, "- id: cs\n  category: child_sexual_exploitation\n"
                        "  weight: heavy\n  regex: 'child\\s+porn\\w*'\n", policy="child-safe")
    gate = gate_of.gate()
    stream = run(gate, tok, ["Here", " is", " child", " porn"])
    assert tok.text(stream.shown).startswith("Here is")
    assert "porn" not in tok.text(stream.shown) and "child" not in tok.text(stream.shown)
    assert stream.stopped and [e.action for e in gate.interventions] == ["block"]


def test_check_judges_a_whole_text(tmp_path: Path) -> None:
    text = PRIVACY + "- id: vote\n  category: elections\n  weight: light\n  phrase: vote twice\n"
    gate_of, _ = tier(tmp_path, text)
    verdict = gate_of.check("Please find their home address, and vote twice.")
    assert verdict.action is Action.MASK
    assert verdict.categories == ("privacy", "elections")
    assert verdict.score == 0.67
    assert verdict.rules == ("privacy.home-address", "vote")
    assert verdict.text == "Please […], and vote twice."
    nothing = gate_of.check("A quiet day by the sea.")
    assert (nothing.action, nothing.score, nothing.rules) == (Action.ALLOW, 0.0, ())


def test_check_sides_follow_the_motif(tmp_path: Path) -> None:
    gate_of, _ = tier(tmp_path, "- id: dan\n  category: circumvention\n  weight: medium\n"
                      "  side: prompt\n  phrase: do anything now\n")
    assert gate_of.check("you can do anything now", "prompt").rules == ("dan",)
    assert gate_of.check("you can do anything now", "output").rules == ()


def test_a_token_ending_inside_a_utf8_character_waits_for_the_rest(tmp_path: Path) -> None:
    gate_of, _ = tier(tmp_path, KILL)
    gate = gate_of.gate()
    first, second = "é".encode()[:1], "é".encode()[1:]
    assert gate.feed(1, b"caf").release == 1
    assert gate.feed(2, first).release == 0  # half a character: held
    assert gate.feed(3, second + b"!").release == 2
