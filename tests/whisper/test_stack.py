"""The semantic tier in a running stack (real processes): the prompt judged before the first
token, the answer in windows, status, the fail rule when whisper is killed, and gilgul
bringing it back. The classifier is a tiny one fitted here on the real embedding model
(tests/whisper/tiny_tier2.py); the packaged one is exercised by test_safety_stack.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import runa, wait_for

from runa.models.embedder import LlamaEmbedder

from .stack import (
    ask,
    chat,
    kill_whisper,
    stream_while_killing,
    tier2_rules,
    whisper_health,
    whisper_stack,
)
from .tiny_tier2 import BENIGN, CARE, HARM, fit

REFUSAL = "I can't help with that."
CHILD_SAFE_REFUSAL = ("That's not something I can talk about. If you're worried or upset, "
                      "please talk to a grown-up you trust.")


@pytest.fixture(scope="module")
def weights(minilm_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tier2") / "tiny-tier2.npz"
    embedder = LlamaEmbedder(minilm_gguf, threads=1)
    try:
        fit(embedder, path)
    finally:
        embedder.close()
    return path


@pytest.fixture(scope="module")
def stack(minilm_gguf: Path, weights: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[dict[str, str]]:
    with whisper_stack(tmp_path_factory.mktemp("whisper"), minilm_gguf, weights,
                       {"RUNA_SPLINFER_WHISPER_WINDOW_TOKENS": "16"}) as env:
        yield env


def test_a_harmful_prompt_is_refused_before_any_token(stack: dict[str, str]) -> None:
    final, _ = ask(stack, HARM[0])
    assert final["finish_reason"] == "policy"
    assert final["text"].startswith(REFUSAL)
    assert final["n_eval"] == 0 and final["n_gen"] == 0
    assert tier2_rules(final) == [("tier2.harm", "block")]
    assert final["interventions"][0]["side"] == "prompt"
    assert "policy_notice" not in final


def test_distress_gets_the_whisper_with_resources(stack: dict[str, str]) -> None:
    final, _ = ask(stack, CARE[0], "-n", "4")
    assert final["finish_reason"] != "policy" and final["n_gen"] > 0
    assert ("tier2.care", "whisper") in tier2_rules(final, "prompt")
    assert any("crisis line" in note for note in final["whispers"])
    shown = runa("ask", "-n", "4", CARE[0], env=stack, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "[Runa note: The person may be thinking about suicide" in shown.stderr


def test_an_everyday_prompt_is_answered_with_nothing_from_tier_2(stack: dict[str, str]) -> None:
    final, _ = ask(stack, BENIGN[0], "-n", "8")
    assert final["finish_reason"] in ("length", "stop") and final["n_gen"] > 0
    assert tier2_rules(final) == [] and "policy_notice" not in final


def test_chat_refuses_the_same_prompt_and_answers_the_next(stack: dict[str, str]) -> None:
    done = chat(stack, HARM[1], BENIGN[1], args=("--new", "-n", "4"))
    assert done.returncode == 0, done.stderr
    refused, answered = done.stdout.splitlines()[:2]
    assert refused.startswith(REFUSAL) and answered.strip() and REFUSAL not in answered
    conversation = done.stderr.split("new conversation ")[1].split()[0]
    kept = json.loads(runa("chat", "--export", conversation, "--format", "json",
                           env=stack).stdout)["messages"]
    assert [m["role"] for m in kept] == ["user", "assistant", "user", "assistant"]
    assert kept[1]["content"].startswith(REFUSAL)


def test_splinfer_status_says_tier_2_is_on(stack: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-c", STATUS], env=stack, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    tier2 = json.loads(done.stdout)["policy"]["tier2"]
    assert tier2["tier2"] == "on" and tier2["asked"] >= 1


STATUS = """
import json, os
from runa import stackbus
from runa.client import ServiceClient
from runa.components import load_config
from runa.paths import Paths
paths = Paths.for_stack(os.environ["RUNA_STACK"], os.environ)
config = load_config(paths, os.environ, {})
with stackbus.connect(config, os.environ["RUNA_STACK"]) as bus:
    with ServiceClient(bus, "splinfer", "test") as client:
        print(json.dumps(client.call({"op": "status"})))
"""


def answer_while_killing(stack: dict[str, str], *args: str
                         ) -> tuple[subprocess.CompletedProcess[str], int]:
    """``runa ask`` with a long answer, whisper SIGKILLed once the answer streams; what the
    command printed and the killed pid (gilgul brings whisper back before this returns)."""
    proc = subprocess.Popen([sys.executable, "-m", "runa", "ask", "--temp", "0", "-n", "1500",
                             *args, BENIGN[2]], env=stack, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.read(1)  # the answer has begun: the prompt was judged
    killed = kill_whisper(stack)
    out, err = proc.communicate(timeout=180)
    wait_for(lambda: (h := whisper_health(stack)) and h["pid"] != killed
             and h["status"] == "ready", 90, "gilgul to bring whisper back")
    return subprocess.CompletedProcess(proc.args, proc.returncode, first + out, err), killed


def test_whisper_killed_mid_answer_fails_open_visibly_then_is_back(stack: dict[str, str]
                                                                   ) -> None:
    done, _ = answer_while_killing(stack)
    assert done.returncode == 0, done.stderr
    assert REFUSAL not in done.stdout and len(done.stdout.split()) > 20
    assert "[Runa note: semantic tier unavailable (whisper " in done.stderr
    assert "fail open; the output was not checked by meaning]" in done.stderr
    again, _ = ask(stack, HARM[0])  # checked again, by the new whisper
    assert tier2_rules(again) == [("tier2.harm", "block")]
    assert "policy_notice" not in again


def test_whisper_killed_mid_answer_fails_closed_under_child_safe(stack: dict[str, str]
                                                                 ) -> None:
    final, text, killed = stream_while_killing(stack, BENIGN[2], "child-safe", 1500)
    assert final["finish_reason"] == "policy"  # halted, not run to its length
    words, rest = text.rsplit(CHILD_SAFE_REFUSAL, 1)
    assert words.strip(), "the answer had begun before it was halted"
    assert not rest.strip() and final["n_gen"] < 1500
    assert final["policy_notice"].endswith("fail closed; the output was blocked")
    assert ("tier2.unavailable", "block") in tier2_rules(final, "output")
    wait_for(lambda: (h := whisper_health(stack)) and h["pid"] != killed
             and h["status"] == "ready", 90, "gilgul to bring whisper back")
    again, _ = ask(stack, BENIGN[0], "--policy", "child-safe", "-n", "8")
    assert again["finish_reason"] in ("length", "stop") and "policy_notice" not in again


def policy_check(env: dict[str, str], *texts: str, args: tuple[str, ...] = ()
                 ) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    lines = "".join(json.dumps({"id": n, "text": t}) + "\n" for n, t in enumerate(texts))
    done = subprocess.run([sys.executable, "-m", "runa", "policy", "check", "--json", *args],
                          input=lines, env=env, capture_output=True, text=True, timeout=120)
    return done, [json.loads(line) for line in done.stdout.splitlines()]


def test_policy_check_through_the_stack_includes_tier_2(stack: dict[str, str]) -> None:
    done, verdicts = policy_check(stack, HARM[2], CARE[2], BENIGN[3])
    assert done.returncode == 0, done.stderr
    assert [(v["action"], "tier2.harm" in v["rules"]) for v in verdicts] == \
        [("block", True), ("whisper", False), ("allow", False)]
    assert "tier2.care" in verdicts[1]["rules"] and set(verdicts[0]) == \
        {"id", "action", "categories", "score", "rules"}
    assert done.stderr == ""


def test_policy_check_in_process_gives_the_same_verdicts(
        stack: dict[str, str], minilm_gguf: Path, weights: Path, tmp_path: Path) -> None:
    from support import isolated_env

    env = {**isolated_env(tmp_path, whisper=True),
           "RUNA_WHISPER_EMBEDDING_MODEL": str(minilm_gguf),
           "RUNA_WHISPER_WEIGHTS": str(weights)}
    texts = (HARM[2], CARE[2], BENIGN[3])
    local, verdicts = policy_check(env, *texts)
    assert local.returncode == 0, local.stderr
    assert verdicts == policy_check(stack, *texts)[1]


def test_policy_check_without_the_embedding_model_says_so_and_exits_69(
        tmp_path: Path, weights: Path) -> None:
    from support import isolated_env

    # a name no models directory holds: an installed runa-model-default in /usr/share would
    # otherwise be found whatever HOME says
    env = {**isolated_env(tmp_path, whisper=True), "RUNA_WHISPER_WEIGHTS": str(weights),
           "RUNA_WHISPER_EMBEDDING_MODEL": "no-such-embedding-model.gguf"}
    done, verdicts = policy_check(env, BENIGN[0])
    assert done.returncode == 69
    assert verdicts[0]["action"] == "flag" and verdicts[0]["rules"] == ["tier2.unavailable"]
    assert "runa policy check: the semantic tier (tier 2) could not run (" in done.stderr
    assert "runa models setup" in done.stderr
    closed, verdicts = policy_check(env, BENIGN[0], args=("--policy", "child-safe"))
    assert closed.returncode == 69 and verdicts[0]["action"] == "block"


def test_policy_check_with_whisper_disabled_is_tier_1_only(tmp_path: Path) -> None:
    from support import isolated_env

    done, verdicts = policy_check(isolated_env(tmp_path), BENIGN[0])
    assert done.returncode == 0 and verdicts[0]["action"] == "allow"
    assert "the semantic tier (tier 2) is off (whisper is disabled in the component " \
        "registry): tier 1 only" in done.stderr


def test_with_whisper_disabled_tier_2_is_off_and_says_so(tmp_path: Path) -> None:
    from support import tiny_model_stack

    with tiny_model_stack(tmp_path, {}) as (env, _):
        done = subprocess.run([sys.executable, "-c", STATUS], env=env, capture_output=True,
                              text=True, timeout=60)
        assert json.loads(done.stdout)["policy"]["tier2"] == {
            "tier2": "off", "why": "whisper is disabled in the component registry "
            f"({tmp_path / 'etc/components.d/10-whisper-off.toml'})"}
        final, _ = ask(env, HARM[0], "-n", "4")
        assert final["finish_reason"] != "policy" and "policy_notice" not in final
        assert not [i for i in final["interventions"] if i["rule"].startswith("tier2.")]


def test_a_set_that_passes_everything_does_not_ask_a_whisper_that_cannot_answer(
        tmp_path: Path) -> None:
    from support import isolated_env, remove_segments

    from runa.testing.tiny_gguf import write_tiny_gguf

    env = {**isolated_env(tmp_path, whisper=True),
           "RUNA_SPLINFER_MODEL": str(write_tiny_gguf(tmp_path / "tiny.gguf")),
           "RUNA_WHISPER_EMBEDDING_MODEL": str(tmp_path / "missing.gguf")}
    up = runa("up", "--detach", env=env, timeout=120)
    assert up.returncode == 0, up.stderr
    try:
        wait_for(lambda: str((whisper_health(env) or {}).get("status", "")).startswith(
            "unavailable"), 60, "whisper to run without its model")
        down, verdicts = policy_check(env, BENIGN[0])  # whisper cannot answer: the fail rule
        assert down.returncode == 69 and verdicts[0]["rules"] == ["tier2.unavailable"]
        through, verdicts = policy_check(env, BENIGN[0], HARM[0], args=("--policy", "off"))
        local, in_process = policy_check({**env, "RUNA_STACK": env["RUNA_STACK"] + "none"},
                                         BENIGN[0], HARM[0], args=("--policy", "off"))
        assert (through.returncode, through.stderr) == (local.returncode, local.stderr) == (0, "")
        assert verdicts == in_process and [v["action"] for v in verdicts] == ["allow", "allow"]
    finally:
        runa("down", env=env, timeout=120)
        remove_segments(env)
