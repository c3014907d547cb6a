"""``runa models`` and ``runa ps`` against a running stack: what is in use, what it holds."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import isolated_env, remove_segments, runa, wait_for

from runa.client import ServiceClient
from runa.components import load_config
from runa.paths import Paths
from runa.stackbus import connect
from runa.testing.tiny_gguf import write_tiny_gguf

SETTINGS = {"RUNA_SPLINFER_CTX_SIZE": "2048", "RUNA_SPLINFER_THREADS": "1",
            "RUNA_SPLINFER_PARALLEL": "4", "RUNA_SPLINFER_BATCH_SIZE": "512",
            "RUNA_LOG_TARGET": "stderr"}
#: Long answers of a model that never ends its turn: still streaming when ``ps`` asks.
LONG = {"n_predict": 400, "temp": 0}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("ps")
    env = {**isolated_env(root), **SETTINGS}
    source = write_tiny_gguf(root / "download.gguf", endless=True, n_embd=256, n_ff=512,
                             n_layer=4)
    added = runa("models", "add", str(source), "--name", "endless", env=env)
    assert added.returncode == 0, added.stderr
    env["RUNA_SPLINFER_MODEL"] = "endless"
    up = runa("up", "--detach", env=env)
    assert up.returncode == 0, up.stderr
    yield env
    runa("down", env=env)
    remove_segments(env)


def stream(env: dict[str, str], conversation: str, started: threading.Event,
           finals: dict[str, dict[str, Any]]) -> None:
    """One person's chat turn, read to its end; ``started`` is set at its first piece."""
    config = load_config(Paths.for_stack(env["RUNA_STACK"], env), env)
    with connect(config, env["RUNA_STACK"]) as bus, \
            ServiceClient(bus, "splinfer", conversation) as client:
        for envelope in client.request({"op": "chat", "text": "tell me about the sea",
                                        "conversation": conversation, "params": LONG},
                                       idle_timeout=60):
            started.set()
            if envelope.eof:
                finals[conversation] = envelope.payload


def test_ps_lists_every_streaming_conversation_with_its_size(stack: dict[str, str]) -> None:
    names = [f"talk-{n}" for n in range(4)]
    started = {name: threading.Event() for name in names}
    finals: dict[str, dict[str, Any]] = {}
    threads = [threading.Thread(target=stream, args=(stack, name, started[name], finals))
               for name in names]
    for thread in threads:
        thread.start()
    for name in names:
        assert started[name].wait(60), name
    shown = runa("ps", "--json", env=stack)
    for thread in threads:
        thread.join(120)
    assert shown.returncode == 0, shown.stderr
    answer = json.loads(shown.stdout)
    rows = {row["conversation"]: row for row in answer["conversations"]}
    assert set(rows) == set(names), answer
    for name in names:
        assert rows[name]["state"] == "answering", rows
        assert rows[name]["tokens"] > 0 and rows[name]["generated"] > 0, rows
        # its size is the prompt and what it had generated when ps asked, at most the whole turn
        assert rows[name]["tokens"] <= finals[name]["n_prompt"] + finals[name]["n_gen"]
    assert answer["model"]["name"] == "endless"
    assert answer["model"]["quantization"] == "F32"
    assert answer["loaded"] and answer["n_ctx"] == 2048 and answer["parallel"] == 4
    assert answer["threads"] == 1
    assert answer["rss_bytes"] > answer["model"]["bytes"]


def test_after_answers_ps_shows_their_speed_and_status_still_names_the_model(
        stack: dict[str, str]) -> None:
    done = threading.Event()
    stream(stack, "speed", done, {})
    answer = json.loads(runa("ps", "--json", env=stack).stdout)
    assert answer["tokens_per_s"] and all(speed > 0 for speed in answer["tokens_per_s"])
    assert {"conversation": "speed", "state": "idle"}.items() <= \
        next(row for row in answer["conversations"] if row["conversation"] == "speed").items()
    text = runa("ps", env=stack).stdout
    assert "endless" in text and "speed" in text and "tokens/s" in text
    wait_for(lambda: splinfer_status(stack) == "ready: endless.gguf", 10,
             "splinfer's status to name the model after answering")


def splinfer_status(env: dict[str, str]) -> str:
    status = json.loads(runa("status", "--json", env=env).stdout)
    return str(next(c for c in status["components"] if c["name"] == "splinfer")["status"])


def test_models_list_marks_the_model_in_use_and_rm_refuses_it(stack: dict[str, str]) -> None:
    listed = runa("models", "list", "--json", env=stack)
    assert listed.returncode == 0, listed.stderr
    # (where Runa is installed the system's models are listed too: look at the test's own)
    [row] = [r for r in json.loads(listed.stdout) if r["name"] == "endless"]
    assert (row["name"], row["in_use"], row["role"], row["fits"]) == \
        ("endless", True, "chat", True)
    assert row["needs_bytes"] > row["bytes"]
    removed = runa("models", "rm", "endless", env=stack)
    assert removed.returncode == 75
    assert "endless is the model splinfer runs" in removed.stderr
    assert Path(row["path"]).exists()


def test_models_list_says_unknown_when_the_stack_is_down(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    assert runa("models", "add", str(write_tiny_gguf(tmp_path / "t.gguf")), env=env).returncode == 0
    [row] = [r for r in json.loads(runa("models", "list", "--json", env=env).stdout)
             if r["name"] == "t"]
    assert row["in_use"] is None
    assert "unknown" in runa("models", "list", env=env).stdout
    ps = runa("ps", env=env)
    assert ps.returncode == 69 and "not running" in ps.stderr


def ask(env: dict[str, str], conversation: str, text: str) -> dict[str, Any]:
    """One short greedy turn; its final payload."""
    config = load_config(Paths.for_stack(env["RUNA_STACK"], env), env)
    with connect(config, env["RUNA_STACK"]) as bus, \
            ServiceClient(bus, "splinfer", "test") as client:
        final: dict[str, Any] = {}
        for envelope in client.request({"op": "chat", "text": text, "conversation": conversation,
                                        "params": {"n_predict": 8, "temp": 0}}, idle_timeout=60):
            if envelope.eof:
                final = envelope.payload
        return final


@pytest.fixture
def two_models(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A stack on model 'first' with 'second' added beside it, under a 160 MiB limit."""
    env = {**isolated_env(tmp_path), **SETTINGS, "RUNA_SPLINFER_MEMORY_MAX": "160M"}
    for name, seed in (("first", 0), ("second", 1)):
        source = write_tiny_gguf(tmp_path / f"{name}-src.gguf", seed=seed, name=name)
        assert runa("models", "add", str(source), "--name", name, env=env).returncode == 0
    big = write_tiny_gguf(tmp_path / "big.gguf", n_embd=512, n_head=4, n_head_kv=4, n_ff=1024,
                          n_layer=8, name="big")
    assert runa("models", "add", str(big), env=env).returncode == 0
    env["RUNA_SPLINFER_MODEL"] = "first"
    up = runa("up", "--detach", env=env)
    assert up.returncode == 0, up.stderr
    yield env
    runa("down", env=env)
    remove_segments(env)


def test_use_switches_models_and_back_restores_the_earlier_state(
        two_models: dict[str, str]) -> None:
    env = two_models
    first = ask(env, "walk", "hello there how are you")
    assert first["restored"] is False
    used = runa("models", "use", "second", env=env)
    assert used.returncode == 0, used.stderr
    assert "now answers with second.gguf" in used.stdout
    assert json.loads(runa("ps", "--json", env=env).stdout)["model"]["name"] == "second"
    # the conversation goes on under the new model: its history is read once, whole
    second = ask(env, "walk", "and the sea")
    assert second["restored"] is False and second["n_eval"] == second["n_prompt"]
    assert second["n_prompt"] > first["n_prompt"] + first["n_gen"]
    back = runa("models", "use", "first", env=env)
    assert back.returncode == 0, back.stderr
    assert "1 conversation state(s) it made before are back" in back.stdout
    # back on the first model: its saved state of the first turn is restored, and only what
    # came after it is read
    third = ask(env, "walk", "and the sky")
    assert third["restored"] is True
    assert third["n_eval"] < third["n_prompt"] - first["n_prompt"] // 2, third
    history = [m["role"] for m in _history(env, "walk")]
    assert history == ["user", "assistant"] * 3
    assert runa("models", "use", "first", env=env).stdout.startswith("splinfer already uses")


def _history(env: dict[str, str], conversation: str) -> list[dict[str, str]]:
    config = load_config(Paths.for_stack(env["RUNA_STACK"], env), env)
    with connect(config, env["RUNA_STACK"]) as bus, \
            ServiceClient(bus, "splinfer", "test") as client:
        answer = client.call({"op": "history", "conversation": conversation})
    return list(answer["messages"])


def test_refused_switches_say_why_and_the_model_keeps_serving(
        two_models: dict[str, str], tmp_path: Path) -> None:
    from tieto.tiny_bert import write_tiny_bert

    from runa.models.bert_gguf import convert_bert

    env = two_models
    embedding = tmp_path / "bert.gguf"
    convert_bert(write_tiny_bert(tmp_path / "bert-source"), embedding)
    not_chat = runa("models", "use", str(embedding), env=env)
    assert not_chat.returncode == 65 and "an embedding model (bert)" in not_chat.stderr
    unknown = runa("models", "use", "nosuch", env=env)
    assert unknown.returncode == 66 and "model 'nosuch' not found" in unknown.stderr
    big = runa("models", "use", "big", env=env)
    assert big.returncode == 75, big.stderr
    assert "needs about" in big.stderr and "the memory limit is 160 MiB" in big.stderr
    assert "components.splinfer.memory_max" in big.stderr
    assert json.loads(runa("ps", "--json", env=env).stdout)["model"]["name"] == "first"
    assert ask(env, "still", "hello")["n_gen"] > 0
    listed = {row["name"]: row for row in json.loads(
        runa("models", "list", "--json", env=env).stdout)}
    assert listed["big"]["fits"] is False and "the limit is 160 MiB" in listed["big"]["why"]
    assert listed["first"]["in_use"] is True and listed["second"]["in_use"] is False
