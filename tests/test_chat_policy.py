"""The policy in ``runa chat`` and ``runa ask``: /policy, --policy, the lock, whispers.

The REPL runs over the fake splinfer of tests/test_chat.py, whose final envelope here
carries what splinfer's does under a policy (docs/policy.md, "Interventions").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import runa
from test_chat import FakeSplinfer, Run

from runa.chat.policy_notes import intervention_summary, whisper_lines
from runa.client import ServiceFault
from runa.config import Schema
from runa.paths import Paths
from runa.policy import PolicyLibrary
from runa.splinter import Envelope, Fault

LOCKED = '[policy]\nminimum = "child-safe"\n'
SUPPORT = "If you are thinking about suicide, please contact local emergency services."
MASKED = {"rule": "privacy.ssn", "category": "privacy", "weight": "medium", "action": "mask",
          "side": "output", "policy": "default", "token_index": 3, "conversation": "conv-1"}
FLAGGED = {"rule": "self-harm.end-my-life", "category": "suicide_self_harm",
           "weight": "heavy", "action": "whisper", "side": "prompt", "policy": "default",
           "conversation": "conv-1"}


def library(tmp_path: Path, admin: str = "") -> PolicyLibrary:
    paths = Paths.for_stack("u1", {"HOME": str(tmp_path / "home"),
                                   "RUNA_SYSCONFDIR": str(tmp_path / "etc")})
    if admin:
        (tmp_path / "etc").mkdir(parents=True, exist_ok=True)
        (tmp_path / "etc/runa.toml").write_text(admin)
    return PolicyLibrary.for_stack(paths, Schema().load(paths, {}))


class PolicySplinfer(FakeSplinfer):
    """The fake splinfer, its final envelope carrying ``extra`` (policy, interventions,
    whispers) and the policy set the conversation runs under."""

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.extra = extra or {}
        self.kept_policy = "default"

    def request(self, payload: dict[str, Any], *, idle_timeout: float = 30.0,
                before_send: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                ) -> Iterator[Envelope]:
        if payload["op"] == "chat":
            self.kept_policy = payload.get("policy") or self.kept_policy
        for envelope in super().request(payload, idle_timeout=idle_timeout,
                                        before_send=before_send):
            if envelope.eof and payload["op"] == "chat":
                envelope = self._reply({**envelope.payload, "policy": self.kept_policy,
                                        **self.extra}, eof=True)
            yield envelope


def policy_run(tmp_path: Path, *, admin: str = "", interactive: bool = True,
               extra: dict[str, Any] | None = None, policy: str | None = None) -> Run:
    run = Run(PolicySplinfer(extra), interactive=interactive)
    run.session.policies = library(tmp_path, admin)
    run.session.chosen_policy = run.session.policy = policy
    return run


# -- /policy -----------------------------------------------------------------------------------

def test_policy_lists_the_sets_marking_the_conversations_once_splinfer_named_it(
        tmp_path: Path) -> None:
    run = policy_run(tmp_path)
    run.start()
    run.run("/policy", "hello", "/policy")
    first, second = run.out.getvalue().split("Hello!\n")
    assert "policy sets (* = this conversation's; /policy NAME switches):" in first
    assert "  default     The everyday policy" in first
    assert "(splinfer names this conversation's set with its next answer)" in first
    assert "* default     The everyday policy" in second
    assert "  child-safe  For children" in second
    assert "locked" not in second


def test_switching_policy_sends_it_with_the_next_question_and_keeps_it(
        tmp_path: Path) -> None:
    run = policy_run(tmp_path)
    run.start()
    status, _ = run.run("hello", "/policy research", "again", "and again")
    assert status == 0
    assert "policy research: this conversation runs under it from your next message on" \
        in run.out.getvalue()
    assert [chat.get("policy") for chat in run.fake.chats()] == [None, "research", "research"]
    assert run.session.policy == "research"


def test_policy_off_under_the_lock_is_refused_with_the_reason_and_nothing_sent(
        tmp_path: Path) -> None:
    run = policy_run(tmp_path, admin=LOCKED, interactive=False)
    status, _ = run.run("/policy off", "hello")
    assert status == 77
    assert run.notices.getvalue() == (
        "runa chat: /policy in chat asks for 'off', but the administrator locked the policy "
        f"at 'child-safe' ({tmp_path / 'etc/runa.toml'}); 'off' allows violent_crimes/light, "
        "which 'child-safe' masks\n")
    assert run.fake.requests == []
    assert run.session.chosen_policy is None


def test_a_refused_policy_in_a_terminal_changes_nothing_and_the_chat_goes_on(
        tmp_path: Path) -> None:
    run = policy_run(tmp_path, admin=LOCKED, policy="child-safe")
    status, _ = run.run("/policy off", "hello", "/policy")
    assert status == 0
    assert run.fake.chats()[0]["policy"] == "child-safe"
    listing = run.out.getvalue().split("Hello!\n")[1]
    assert "* child-safe  For children" in listing
    assert "  off         locked  No policy" in listing


def test_an_unknown_policy_lists_the_known_ones(tmp_path: Path) -> None:
    run = policy_run(tmp_path, interactive=False)
    status, _ = run.run("/policy strict")
    assert status == 66
    assert ("unknown policy set 'strict'; known sets: child-safe, default, off, research"
            in run.notices.getvalue())
    assert "  research" in run.out.getvalue()


def test_resuming_a_conversation_leaves_splinfers_kept_policy_in_force(
        tmp_path: Path) -> None:
    run = policy_run(tmp_path, policy="research")
    run.fake.conversations["other"] = {"persona": "pirate", "messages": []}
    assert run.run("hello")[0] == 0
    run.session.resume("other")
    assert run.session.policy is None  # splinfer names it with the next answer
    assert run.run("arr?")[0] == 0
    assert [chat.get("policy") for chat in run.fake.chats()] == ["research", None]


def test_a_not_authorized_answer_ends_a_piped_chat_with_77_and_drops_the_choice(
        tmp_path: Path) -> None:
    run = policy_run(tmp_path, interactive=False, policy="research")
    reason = "'research' is below the administrator's lock"
    run.fake.fault = ServiceFault("splinfer", {"code": Fault.NOT_AUTHORIZED,
                                               "name": "NOT_AUTHORIZED", "message": reason})
    status, _ = run.run("hello")
    assert status == 77
    assert run.notices.getvalue() == f"runa chat: splinfer: {reason} (NOT_AUTHORIZED)\n"
    assert run.session.chosen_policy is None


# -- what an answer's policy shows -------------------------------------------------------------

def test_whispers_and_interventions_follow_the_answer_in_a_terminal(tmp_path: Path) -> None:
    run = policy_run(tmp_path, extra={"interventions": [MASKED, FLAGGED, MASKED],
                                      "whispers": [SUPPORT]})
    assert run.run("hello")[0] == 0
    assert run.out.getvalue() == (f"Hello!\n[Runa note: {SUPPORT}]\n"
                                  "[policy default: 2 masked, 1 whispered]\n")


def test_piped_stdout_is_the_answer_alone_and_whispers_go_to_stderr(tmp_path: Path) -> None:
    run = policy_run(tmp_path, interactive=False,
                     extra={"interventions": [MASKED], "whispers": [SUPPORT]})
    assert run.run("hello")[0] == 0
    assert run.out.getvalue() == "Hello!\n"
    assert run.notices.getvalue() == f"[Runa note: {SUPPORT}]\n"


def test_an_answer_the_policy_left_alone_shows_nothing_more(tmp_path: Path) -> None:
    run = policy_run(tmp_path, extra={"interventions": [], "whispers": []})
    run.run("hello")
    assert run.out.getvalue() == "Hello!\n"


def test_the_notes_read_the_final_envelope() -> None:
    assert whisper_lines({"whispers": [" Call someone. ", ""]}) == ["[Runa note: Call someone.]"]
    # The conversation's set gave way to the administrator's minimum: the person is told first.
    assert whisper_lines({"policy_notice": "the lock is at 'child-safe'",
                          "whispers": ["Call someone."]}) == [
        "[Runa note: the lock is at 'child-safe']", "[Runa note: Call someone.]"]
    assert intervention_summary({"policy": "child-safe", "interventions": [
        {"action": "flag"}, {"action": "block"}, {"action": "flag"}]}) == \
        "[policy child-safe: 1 blocked, 2 flagged]"
    assert intervention_summary({"policy": "default"}) is None


# -- --policy on the command line --------------------------------------------------------------

def lock(env: dict[str, str]) -> Path:
    etc = Path(env["RUNA_SYSCONFDIR"])
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "runa.toml").write_text(LOCKED)
    return etc / "runa.toml"


@pytest.mark.parametrize("command", [["ask", "hello"], ["chat"]])
def test_policy_option_below_the_lock_exits_77_before_anything_is_sent(
        command: list[str], runa_env: dict[str, str]) -> None:
    admin = lock(runa_env)
    # No stack runs: reaching the bus would be 69 ("Runa is not running").
    result = runa(*command, "--policy", "off", env=runa_env)
    assert result.returncode == 77, result.stderr
    assert result.stderr == (
        f"runa {command[0]}: --policy asks for 'off', but the administrator locked the policy "
        f"at 'child-safe' ({admin}); 'off' allows violent_crimes/light, which 'child-safe' "
        "masks\n")
    assert result.stdout == ""


def test_an_unknown_policy_option_exits_66_listing_the_known(runa_env: dict[str, str]) -> None:
    result = runa("ask", "--policy", "strict", "hello", env=runa_env)
    assert result.returncode == 66
    assert result.stderr == ("runa ask: unknown policy set 'strict'; known sets: child-safe, "
                             "default, off, research\n")


def test_a_policy_at_the_lock_goes_on_to_the_bus(runa_env: dict[str, str]) -> None:
    lock(runa_env)
    result = runa("ask", "--policy", "child-safe", "hello", env=runa_env)
    assert result.returncode == 69  # allowed: it went on and found no stack running
