"""splinfer's side of tier 2 without processes: the answer's windows (a block halts the
stream with the refusal, a whisper is kept for the next turn, whisper failing applies the
fail rule once), tier 1's delay cells decided by tier 2, and long texts sent in parts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from runa.policy import Action, PassGate, Tier1, Verdict, parse_matrix, parse_set
from runa.policy.taxonomy import Weight
from runa.policy.tier2 import Hit, Judgement
from runa.policy.tiers import PromptCheck, combine, pooled
from runa.protocol import whisper as protocol
from runa.splinfer.semantic import SemanticGate, WhisperDown, WhisperLink

PACKAGED = Path(__file__).resolve().parents[2] / "runa/data/policy/sets"
DEFAULT = parse_set(PACKAGED / "default.yaml")
CHILD_SAFE = parse_set(PACKAGED / "child-safe.yaml")
REFUSAL_TOKENS = (901, 902)
ARRIVES = 0.5  # when a late FakeLink's answers come


def judged(*hits: tuple[str, str]) -> Judgement:
    return Judgement(tuple(Hit(rule, category, Weight.HEAVY, 0.9, 0) for rule, category
                           in hits), {}, 1, 1.0)


class FakeLink:
    """Answers each request with the next scripted judgement (or fails), at once or later."""

    def __init__(self, *answers: Judgement | str, late: bool = False) -> None:
        self.answers = list(answers)
        self.late = late
        self.sent: list[tuple[str, str]] = []
        self.timeout_s = 1.0
        self.failures = 0
        self.last_problem = ""
        self.now = 0.0
        self.dead = False
        self.forgotten: list[str] = []
        self._ready: dict[str, Judgement | str] = {}

    def clock(self) -> float:
        return self.now

    def send(self, text: str, side: str) -> str:
        answer = self.answers.pop(0) if self.answers else judged()
        if answer == "down" and not self.late:
            raise WhisperDown("whisper is not running")
        self.sent.append((text, side))
        rid = f"r{len(self.sent)}"
        self._ready[rid] = answer
        return rid

    def answer(self, rid: str) -> Judgement | None:
        if self.dead or (self.late and self.now < ARRIVES):
            return None
        found = self._ready.pop(rid, None)
        if found == "down":
            return None
        return found  # type: ignore[return-value]

    def wait(self, rid: str, deadline: float) -> Judgement:
        if self.dead:
            raise WhisperDown("whisper died (pid 4242) and is restarting")
        if self.late and self.now < ARRIVES <= deadline:
            self.now = ARRIVES  # waited until it came
        found = self.answer(rid)
        if found is None:
            raise WhisperDown("whisper did not answer within 1000 ms")
        return found

    def forget(self, rid: str) -> None:
        self.forgotten.append(rid)
        self._ready.pop(rid, None)

    def alive_or_raise(self) -> None:
        if self.dead:
            raise WhisperDown("whisper died (pid 4242) and is restarting")


def gate(link: FakeLink, policy=DEFAULT, *, window: int = 4, wait: bool = False,
         cancelled: bool = False) -> SemanticGate:
    return SemanticGate(PassGate(), link, policy, lambda: REFUSAL_TOKENS,  # type: ignore[arg-type]
                        window=window, wait=wait, conversation="c1",
                        cancelled=lambda: cancelled)


def feed(g: SemanticGate, words: list[str]):
    return [g.feed(i, f" {word}".encode()) for i, word in enumerate(words)]


def test_a_block_in_a_window_halts_the_stream_with_the_refusal() -> None:
    link = FakeLink(judged(("tier2.harm", "violent_crimes")))
    g = gate(link)
    steps = feed(g, ["one", "two", "three", "four", "five"])
    assert link.sent == [(" one two three four", "output")]
    assert all(step.release == 1 and not step.stop for step in steps[:4])
    halt = steps[4]
    assert halt.stop and halt.insert == REFUSAL_TOKENS and halt.take_back == 1
    assert halt.reason == "policy default: violent_crimes"
    [item] = g.interventions
    assert (item.rule, item.action, item.side, item.token_index, item.conversation) == \
        ("tier2.harm", "block", "output", 0, "c1")


def test_windows_overlap_with_the_text_before_them() -> None:
    link = FakeLink()
    g = gate(link, window=4)
    feed(g, ["a", "b", "c", "d", "e", "f", "g", "h"])
    assert [text for text, _ in link.sent] == [" a b c d", " c d e f g h"]


def test_a_whisper_in_the_answer_is_kept_for_the_next_turn_and_does_not_stop() -> None:
    g = gate(FakeLink(judged(("tier2.care", "suicide_self_harm"))))
    steps = feed(g, ["w"] * 8)
    assert not any(step.stop for step in steps)
    assert len(g.whispers) == 1 and "crisis line" in g.whispers[0]
    assert [i.action for i in g.interventions] == ["whisper"]


def test_the_tail_of_the_answer_is_judged_when_it_ends() -> None:
    link = FakeLink(judged(), judged(("tier2.harm", "violent_crimes")))
    g = gate(link)
    feed(g, ["one", "two", "three", "four", "five", "six"])
    end = g.finish()
    assert link.sent[-1] == (" three four five six", "output")  # the tail and its overlap
    assert end.stop and end.insert == REFUSAL_TOKENS


def test_windows_still_pending_when_the_answer_ends_are_waited_for() -> None:
    # 8 tokens, windows of 4: no tail to ask, both windows' answers still on their way
    link = FakeLink(judged(), judged(("tier2.harm", "violent_crimes")), late=True)
    g = gate(link)
    steps = feed(g, ["w"] * 8)
    assert not any(step.stop for step in steps) and len(link.sent) == 2
    end = g.finish()
    assert end.stop and end.insert == REFUSAL_TOKENS
    assert end.reason == "policy default: violent_crimes"
    assert [(i.rule, i.token_index) for i in g.interventions] == [("tier2.harm", 2)]
    assert link.now == ARRIVES  # waited, not beyond the answer's arrival


def test_a_late_whisper_at_the_end_is_kept_for_the_next_turn() -> None:
    link = FakeLink(judged(("tier2.care", "suicide_self_harm")), late=True)
    g = gate(link)
    feed(g, ["w"] * 4)
    assert not g.finish().stop
    assert len(g.whispers) == 1 and "crisis line" in g.whispers[0]


@pytest.mark.parametrize(("policy", "stops", "says"), [
    (DEFAULT, False, "fail open; the output was not checked by meaning"),
    (CHILD_SAFE, True, "fail closed; the output was blocked"),
])
def test_whisper_dying_after_the_last_window_applies_the_fail_rule(policy, stops: bool,
                                                                   says: str) -> None:
    link = FakeLink(late=True)
    g = gate(link, policy)
    feed(g, ["w"] * 8)
    link.dead = True
    end = g.finish()
    assert [i.rule for i in g.interventions] == ["tier2.unavailable"]
    assert "whisper died (pid 4242)" in g.notice and g.notice.endswith(says)
    assert end.stop is stops


def test_an_unanswered_window_at_the_end_applies_the_fail_rule() -> None:
    link = FakeLink("down", late=True)
    g = gate(link, CHILD_SAFE)
    feed(g, ["w"] * 4)
    end = g.finish()
    assert end.stop and end.insert == REFUSAL_TOKENS
    assert "did not answer" in g.notice and g.notice.endswith("the output was blocked")


def test_a_cancelled_answer_asks_no_tail_and_waits_for_nothing() -> None:
    link = FakeLink(late=True)
    g = gate(link, cancelled=True)
    feed(g, ["w"] * 6)
    end = g.finish()
    assert len(link.sent) == 1 and link.now == 0.0 and not end.stop and not g.notice
    assert link.forgotten == ["r1"]  # its late answer will be dropped


def test_whisper_dying_while_windows_wait_is_noticed_before_the_timeout() -> None:
    link = FakeLink(late=True)
    g = gate(link, CHILD_SAFE)
    feed(g, ["w"] * 8)
    link.dead, link.now = True, 0.2  # well within the 1 s timeout
    step = g.feed(99, b" x")
    assert step.stop and step.insert == REFUSAL_TOKENS
    assert "whisper died (pid 4242)" in g.notice
    assert link.forgotten == ["r1", "r2"]


@pytest.mark.parametrize(("policy", "action", "stops", "says"), [
    (DEFAULT, "flag", False, "fail open; the output was not checked by meaning"),
    (CHILD_SAFE, "block", True, "fail closed; the output was blocked"),
])
def test_whisper_down_applies_the_fail_rule_once(policy, action: str, stops: bool,
                                                 says: str) -> None:
    link = FakeLink("down")
    g = gate(link, policy)
    steps = feed(g, ["w"] * 12)
    failed = [i for i in g.interventions if i.rule == "tier2.unavailable"]
    assert [(i.action, i.side, i.token_index) for i in failed] == [(action, "output", 4)]
    assert g.notice.endswith(says) and "whisper is not running" in g.notice
    assert any(step.stop for step in steps) is stops
    assert len(link.sent) == 0  # not asked again once down


def test_a_window_not_answered_in_time_is_a_failure() -> None:
    link = FakeLink("down", late=True)
    g = gate(link)
    feed(g, ["w"] * 5)
    assert not g.notice
    link.now = 1.5
    g.feed(99, b" x")
    assert "did not answer within 1000 ms" in g.notice


def test_a_delay_set_waits_for_each_window() -> None:
    link = FakeLink(judged(("tier2.harm", "violent_crimes")), late=False)
    g = gate(link, wait=True)
    steps = feed(g, ["one", "two", "three", "four"])
    assert steps[3].stop  # decided on the token that completed the window


def delay_set(tmp_path: Path, fail: str = "closed"):
    path = tmp_path / "careful.yaml"
    path.write_text(f"description: careful\nfail: {fail}\nrefusal: No.\nactions:\n"
                    "  default: {light: flag, medium: flag, heavy: block}\n"
                    "  violent_crimes: delay\n")
    return parse_set(path)


@pytest.mark.parametrize(("fail", "alone_action"), [("closed", Action.BLOCK),
                                                    ("open", Action.FLAG)])
def test_a_delay_cell_waits_for_tier_2_instead_of_the_fail_rule(
        tmp_path: Path, fail: str, alone_action: Action) -> None:
    policy = delay_set(tmp_path, fail)
    matrix_file = tmp_path / "m.yaml"
    matrix_file.write_text("- id: t.knife\n  category: violent_crimes\n  weight: medium\n"
                           "  side: prompt\n  phrase: sharpen the knife\n")
    from runa.policy import Matrix
    tier1 = Tier1(Matrix(tuple(parse_matrix(matrix_file))), policy, None)
    alone = tier1.check("how do I sharpen the knife", "prompt")
    assert alone.action is alone_action  # the fail rule while tier 2 has not spoken
    cleared = combine(alone, PromptCheck((), judged()), policy)
    assert cleared.action is Action.FLAG
    assert cleared.interventions[0].reason == "delay: the semantic tier did not confirm it"
    hit = judged(("tier2.harm", "violent_crimes"))
    confirmed = combine(alone, PromptCheck((), hit), policy)
    assert confirmed.action is Action.BLOCK
    assert confirmed.interventions[0].reason == "delay: the semantic tier confirmed it"
    down = combine(alone, PromptCheck((), None, "down"), policy)
    assert down.action is alone_action  # whisper unavailable: the fail rule stays


def test_a_long_text_goes_in_overlapping_parts_and_is_pooled() -> None:
    text = "".join(f"{i:05d} " for i in range(3000))  # 18000 characters
    parts = protocol.parts(text)
    assert all(len(p) <= protocol.MAX_JUDGE_TEXT for p in parts) and len(parts) == 4
    assert parts[1].startswith(text[protocol.MAX_JUDGE_TEXT - protocol.PART_OVERLAP:][:20])
    assert text.endswith(parts[-1])
    first = Judgement((Hit("tier2.harm", "violent_crimes", Weight.HEAVY, 0.6, 1),),
                      {"harm": 0.6, "care": 0.1}, 3, 2.0)
    second = Judgement((Hit("tier2.harm", "violent_crimes", Weight.HEAVY, 0.9, 0),),
                       {"harm": 0.9, "care": 0.05}, 2, 3.0)
    together = pooled([first, second])
    assert [(h.score, h.window) for h in together.hits] == [(0.9, 3)]
    assert together.scores == {"harm": 0.9, "care": 0.1}
    assert (together.windows, together.elapsed_ms) == (5, 5.0)


def test_tier_1_verdict_without_tier_2_is_left_as_it_was() -> None:
    verdict = Verdict(Action.FLAG)
    assert combine(verdict, PromptCheck((), None), DEFAULT) == verdict


def test_a_long_prompt_is_waited_for_in_proportion_to_its_length() -> None:
    class NoBus:
        def queue(self, name: str) -> object:
            return object()

    link = WhisperLink(NoBus(), 1.5)  # type: ignore[arg-type]
    assert link.wait_for("hello") == 1.5
    assert link.wait_for("x" * 1000) == 1.5
    assert link.wait_for("x" * 11_000) == 1.5 * 11


class Replies:
    """A reply queue holding what whisper sent."""

    def __init__(self) -> None:
        self.waiting: list[SimpleNamespace] = []

    def recv(self, timeout: float) -> SimpleNamespace | None:
        return self.waiting.pop(0) if self.waiting else None


class OneBus:
    """Enough of the bus for one WhisperLink: whisper alive, queries recorded."""

    def __init__(self) -> None:
        self.replies = Replies()
        self.queries: list = []

    def queue(self, name: str) -> Replies:
        return self.replies

    def queue_owner(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(alive=True, pid=1)

    def get(self, key: str) -> str:
        return "{}"

    def sender(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(send=self.queries.append)


def reply(rid: str, judgement: Judgement) -> SimpleNamespace:
    return SimpleNamespace(id=rid, type="response", payload=judgement.to_dict())


def test_an_answer_is_found_behind_many_nobody_waits_for() -> None:
    bus = OneBus()
    link = WhisperLink(bus, 1.5)  # type: ignore[arg-type]
    abandoned = [link.send("x", "output") for _ in range(300)]
    for rid in abandoned:
        link.forget(rid)
    wanted = link.send("y", "output")
    bus.replies.waiting = [*(reply(r, judged()) for r in abandoned),
                           reply(wanted, judged(("tier2.harm", "violent_crimes")))]
    found = link.answer(wanted)
    assert found is not None and [h.rule for h in found.hits] == ["tier2.harm"]
    assert link.answer(wanted) is None  # taken once


def test_waiting_for_whisper_keeps_the_daemon_alive() -> None:
    times = iter(x / 10 for x in range(100))
    pings: list[int] = []
    link = WhisperLink(OneBus(), 1.5, clock=lambda: next(times),  # type: ignore[arg-type]
                       keepalive=lambda: pings.append(1))
    with pytest.raises(WhisperDown, match="did not answer in time"):
        link.wait(link.send("x", "output"), 0.5)
    assert len(pings) >= 3


@pytest.mark.parametrize("payload", [{"scores": [1, 2]}, {"hits": [{"rule": 1}]}])
def test_an_unreadable_answer_is_whisper_down(payload: dict) -> None:
    bus = OneBus()
    link = WhisperLink(bus, 1.5)  # type: ignore[arg-type]
    rid = link.send("x", "output")
    bus.replies.waiting = [SimpleNamespace(id=rid, type="response", payload=payload)]
    with pytest.raises(WhisperDown, match="unreadable"):
        link.answer(rid)
