"""Conversations through the bus: a real splinfer (``runa up``) serving several people at once.

On the tiny synthetic model with flash attention off and an f32 KV cache, so that
a conversation decoded in a batch of four says exactly what it says alone. With
the shipped settings (flash attention on, f16 cache) a row computed in a batch of
another shape differs in the last bits (ggml's kernels round differently for 1
and for N rows, ~5e-7), and rounding K and V to f16 turns that into jumps of an
f16 step (~1e-3) that the random tiny model then amplifies into other tokens
after a few dozen; with f32 everywhere the difference stays ~1e-6 (measured over
200 tokens) and no token changes.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import isolated_env, remove_segments, runa, small_filesystem, wait_for

from runa.client import ServiceClient, ServiceFault
from runa.components import load_config as load
from runa.paths import Paths
from runa.stackbus import connect
from runa.testing.tiny_gguf import write_tiny_gguf

CONTEXT = {"RUNA_SPLINFER_CTX_SIZE": "2048", "RUNA_SPLINFER_THREADS": "2",
           "RUNA_SPLINFER_FLASH_ATTN": "false", "RUNA_SPLINFER_BATCH_SIZE": "512",
           "RUNA_SPLINFER_CACHE_TYPE_K": "f32", "RUNA_SPLINFER_CACHE_TYPE_V": "f32",
           "RUNA_SPLINFER_PARALLEL": "4", "RUNA_SPLINFER_PERSONA": "calm",
           "RUNA_LOG_TARGET": "stderr"}
PERSONAS = {
    "calm": "---\ndescription: greedy\ntemp: 0\n---\nYou are calm.",
    "sea": "---\ndescription: sampled\ntemp: 0.8\ntop_k: 40\nseed: 7\n---\n"
           "You are brief and you like the sea.",
    "star": "---\ndescription: hot\ntemperature: 1.2\nseed: 99\nrepeat_penalty: 1.2\n---\n"
            "You talk about stars.",
    "teacher": "---\ndescription: mirostat\nmirostat: 2\nmirostat_ent: 4\nseed: 3\n---\n"
               "You teach small children, one word at a time.",
}
SHORT = {"n_predict": 12}


def start_stack(root: Path, **extra: str) -> dict[str, str]:
    model = root / "tiny.gguf"
    if not model.exists():
        write_tiny_gguf(model)
    env = {**isolated_env(root), **CONTEXT, "RUNA_SPLINFER_MODEL": str(model), **extra}
    personas = Path(env["XDG_CONFIG_HOME"]) / "runa/personas"
    personas.mkdir(parents=True, exist_ok=True)
    for name, text in PERSONAS.items():
        (personas / f"{name}.md").write_text(text)
    up = runa("up", "--detach", env=env)
    assert up.returncode == 0, up.stderr + log_text(env)
    return env


def log_text(env: dict[str, str]) -> str:
    path = Path(env["XDG_RUNTIME_DIR"]) / "runa/supervisor.log"
    return path.read_text() if path.exists() else ""


def conversations_dir(env: dict[str, str]) -> Path:
    return Path(env["XDG_STATE_HOME"]) / "runa/conversations"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = start_stack(tmp_path_factory.mktemp("conv"))
    yield env
    runa("down", env=env)
    remove_segments(env)


class Chat:
    """A person at a client: sends chat turns, keeps what came back."""

    def __init__(self, env: dict[str, str]) -> None:
        config = load(Paths.for_stack(env["RUNA_STACK"], env), env)
        self.bus = connect(config, env["RUNA_STACK"])
        self.client = ServiceClient(self.bus, "splinfer", "test")

    def close(self) -> None:
        self.client.close()
        self.bus.close()

    def __enter__(self) -> Chat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ask(self, text: str, **payload: Any) -> dict[str, Any]:
        """One turn: the final payload plus 'text' (all pieces) and stream timestamps."""
        payload.setdefault("params", SHORT)
        pieces, stamps, final = [], [], {}
        for envelope in self.client.request({"op": "chat", "text": text, **payload},
                                            idle_timeout=60):
            pieces.append(envelope.payload.get("text", ""))
            stamps.append(time.monotonic())
            if envelope.eof:
                final = envelope.payload
        return {**final, "text": "".join(pieces), "first": stamps[0], "last": stamps[-1]}

    def query(self, op: str, **payload: Any) -> dict[str, Any]:
        return next(iter(self.client.request({"op": op, **payload}))).payload


def new_turn_tokens(before: dict[str, Any], after: dict[str, Any]) -> int:
    """Tokens the new turn added to the prompt (the template's end of the last answer, the
    new message, the assistant's opener)."""
    return after["n_prompt"] - before["n_prompt"] - before["n_gen"]


def assert_only_new_turn_evaluated(before: dict[str, Any], after: dict[str, Any]) -> None:
    new = new_turn_tokens(before, after)
    assert new <= after["n_eval"] <= new + 1, (before, after)


def test_a_returning_conversation_evaluates_only_its_new_turn(stack) -> None:
    with Chat(stack) as person:
        first = person.ask("hello there how are you", conversation="back-1")
        assert first["n_eval"] == first["n_prompt"] and first["restored"] is False
        assert (first["conversation"], first["persona"]) == ("back-1", "calm")
        second = person.ask("and the sea", conversation="back-1")
        assert_only_new_turn_evaluated(first, second)
        assert second["restored"] is True
        history = person.query("history", conversation="back-1")
    assert history["persona"] == "calm"
    assert [m["role"] for m in history["messages"]] == ["user", "assistant"] * 2
    assert history["messages"][2] == {"role": "user", "content": "and the sea"}
    assert history["messages"][3]["content"] == second["text"]


def test_it_comes_back_from_its_state_file_after_others_took_its_sequence(stack) -> None:
    with Chat(stack) as person:
        first = person.ask("hello there", conversation="evicted")
        for i in range(4):  # four others fill every sequence: 'evicted' must leave
            person.ask("something else", conversation=f"crowd-{i}")
        state = conversations_dir(stack) / "evicted.state"
        assert state.is_file()
        meta = json.loads(person.bus.get("splinfer:conv:evicted"))
        assert meta["path"] == str(state) and meta["n_tokens"] > first["n_prompt"]
        assert len(meta["model"]) == 64 and meta["checksum"].startswith("crc32:")
        back = person.ask("and the sky", conversation="evicted")
    assert_only_new_turn_evaluated(first, back)
    assert back["restored"] is True
    assert "restored conversation evicted" in log_text(stack)


def test_four_conversations_with_different_personas_say_what_they_say_alone(stack) -> None:
    talks = [(name, f"hello {name} tell me about the sea") for name in PERSONAS]
    follow = "and what about the sky"
    params = {"n_predict": 200}
    solo = []
    with Chat(stack) as person:
        for i, (persona, text) in enumerate(talks):
            one = person.ask(text, conversation=f"solo-{i}", persona=persona, params=params)
            two = person.ask(follow, conversation=f"solo-{i}", params=params)
            solo.append([one["text"], two["text"]])
    assert len({s[0] for s in solo}) == 4  # four different answers: a mix-up would show
    together: list[list[dict[str, Any]]] = [[] for _ in talks]
    start = threading.Barrier(len(talks))

    def person(i: int) -> None:
        persona, text = talks[i]
        with Chat(stack) as me:
            start.wait()
            together[i].append(me.ask(text, conversation=f"group-{i}", persona=persona,
                                      params=params))
            start.wait()
            together[i].append(me.ask(follow, conversation=f"group-{i}", params=params))

    threads = [threading.Thread(target=person, args=(i,)) for i in range(len(talks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [[turn["text"] for turn in turns] for turns in together] == solo
    assert [t[0]["persona"] for t in together] == [p for p, _ in talks]
    # They were answered at the same time, not one after another.
    for turn in range(2):
        answers = [t[turn] for t in together]
        assert max(a["first"] for a in answers) < min(a["last"] for a in answers)
    for t in together:
        assert_only_new_turn_evaluated(t[0], t[1])


def test_more_chats_than_sequences_wait_their_turn(stack) -> None:
    results: list[dict[str, Any] | Exception] = []

    def ask(i: int) -> None:
        try:
            with Chat(stack) as me:
                results.append(me.ask(f"question {i} about the moon", params={"n_predict": 40}))
        except Exception as error:  # reported below
            results.append(error)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 7 and all(isinstance(r, dict) for r in results), results
    assert all(r["n_gen"] == 40 and r["conversation"] is None for r in results)


def test_cancelling_one_answer_leaves_the_other_alone(stack) -> None:
    params = {"n_predict": 400}
    with Chat(stack) as solo_person:
        alone = solo_person.ask("tell me a long story", conversation="c-alone",
                                persona="sea", params=params)
    outcome: dict[str, Any] = {}
    started = threading.Event()

    def long_one() -> None:
        with Chat(stack) as me:
            outcome["kept"] = me.ask("tell me a long story", conversation="c-kept",
                                     persona="sea", params=params)

    def cancelled_one() -> None:
        with Chat(stack) as me:
            stream = me.client.request({"op": "chat", "text": "tell me another",
                                        "conversation": "c-cancel", "params": params})
            next(stream)
            started.set()
            outcome["cancelled"] = me.client.cancel().payload

    threads = [threading.Thread(target=long_one), threading.Thread(target=cancelled_one)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert started.is_set()
    assert outcome["cancelled"]["finish_reason"] == "cancelled"
    assert outcome["cancelled"]["n_gen"] < 400
    assert outcome["kept"]["text"] == alone["text"] and outcome["kept"]["n_gen"] == 400


def test_switching_persona_reads_the_history_once_then_continues(stack) -> None:
    with Chat(stack) as person:
        person.ask("hello there", conversation="switch")
        first = person.ask("and the sea", conversation="switch")
        other = person.ask("and the sky", conversation="switch", persona="teacher")
        assert other["persona"] == "teacher"
        assert other["n_eval"] > new_turn_tokens(first, other) + 1  # new system prompt
        again = person.ask("and the stars", conversation="switch")
        assert again["persona"] == "teacher"
        assert_only_new_turn_evaluated(other, again)
        assert person.query("history", conversation="switch")["persona"] == "teacher"


def test_forget_removes_history_state_and_metadata(stack) -> None:
    with Chat(stack) as person:
        person.ask("remember me", conversation="forget-me")
        for i in range(4):
            person.ask("push", conversation=f"push-{i}")
        assert person.bus.get("splinfer:conv:forget-me") is not None
        assert person.query("forget", conversation="forget-me") == {
            "conversation": "forget-me", "forgotten": True}
        assert not list(conversations_dir(stack).glob("forget-me.*"))
        assert person.bus.get("splinfer:conv:forget-me") is None
        with pytest.raises(ServiceFault, match="no conversation 'forget-me'"):
            person.query("history", conversation="forget-me")
        fresh = person.ask("remember me", conversation="forget-me")
        assert fresh["restored"] is False and fresh["n_eval"] == fresh["n_prompt"]


def test_a_history_too_big_for_one_envelope_sends_the_newest_turns(stack) -> None:
    with Chat(stack) as person:
        for i in range(12):
            person.ask(f"turn {i} " + "the sea and the sky " * 150, conversation="long")
        history = person.query("history", conversation="long")
    assert history["omitted"] >= 2 and history["omitted"] % 2 == 0
    assert len(history["messages"]) + history["omitted"] == 24
    assert history["messages"][-2]["content"].startswith("turn 11 ")
    assert history["messages"][0]["role"] == "user"


@pytest.mark.parametrize(("op", "payload", "words"), [
    ("chat", {"text": "hi", "persona": "nobody"},
     "unknown persona 'nobody'; known personas: calm, concise, default, gentle, sea, star, "
     "teacher, tutor"),
    ("history", {"conversation": "never-seen"}, "no conversation 'never-seen'"),
    ("forget", {"conversation": "never-seen"}, "no conversation 'never-seen'"),
    ("history", {}, "history needs 'conversation'"),
    ("chat", {"text": "hi", "conversation": "../etc"}, "conversation must be 1 to 64"),
    ("chat", {"text": "hi", "params": {"temp": -1}}, "temp = -1"),
])  # fmt: skip
def test_bad_input_is_refused_with_what_would_work(stack, op, payload, words) -> None:
    with Chat(stack) as person:
        with pytest.raises(ServiceFault) as caught:
            person.query(op, **payload)
        assert caught.value.code == 1000 and words in str(caught.value)
        assert person.ask("still there?")["n_gen"] == SHORT["n_predict"]


def test_personas_and_status_answer(stack) -> None:
    with Chat(stack) as person:
        listed = person.query("personas")
        status = person.query("status")
    names = [p["name"] for p in listed["personas"]]
    assert listed["default"] == "calm" and {"default", "gentle", "sea"} <= set(names)
    sea = next(p for p in listed["personas"] if p["name"] == "sea")
    assert sea["description"] == "sampled" and sea["source"].endswith("personas/sea.md")
    assert status["conversations"]["parallel"] == 4 and status["busy"] is False
    assert status["conversations"]["stored"] >= 1


@pytest.mark.parametrize("damage", ["corrupt", "foreign", "missing"])
def test_an_unusable_state_falls_back_to_the_history_with_a_warning(stack, damage) -> None:
    conv = f"damaged-{damage}"
    with Chat(stack) as person:
        person.ask("hello there", conversation=conv)
        for i in range(4):
            person.ask("push", conversation=f"push-{damage}-{i}")
        state = conversations_dir(stack) / f"{conv}.state"
        raw = bytearray(state.read_bytes())
        if damage == "corrupt":
            raw[-50] ^= 0xFF
            state.write_bytes(bytes(raw))
        elif damage == "foreign":
            state.write_bytes(with_header(bytes(raw), model="0" * 64))  # another model's
        else:
            state.unlink()
        back = person.ask("and the sky", conversation=conv)
    assert back["restored"] is False and back["n_eval"] == back["n_prompt"]
    assert back["n_gen"] == SHORT["n_predict"]
    log = log_text(stack)
    assert f"conversation {conv}: saved state {damage}" in log
    assert "re-processing its history" in log


def with_header(raw: bytes, **changes: Any) -> bytes:
    """A state file's bytes with header fields changed (still a well-formed file)."""
    length = int.from_bytes(raw[8:12], "little")
    header = {**json.loads(raw[12:12 + length]), **changes}
    new = json.dumps(header).encode()
    return raw[:8] + len(new).to_bytes(4, "little") + new + raw[12 + length:]


def test_after_a_restart_the_conversation_comes_back_from_its_file(tmp_path: Path) -> None:
    env = start_stack(tmp_path)
    try:
        with Chat(env) as person:
            first = person.ask("hello there", conversation="restart")
        assert runa("down", env=env).returncode == 0
        assert "saved conversation restart" in log_text(env)
        assert runa("up", "--detach", env=env).returncode == 0
        with Chat(env) as person:
            back = person.ask("and the sea", conversation="restart")
        assert_only_new_turn_evaluated(first, back)
        assert back["restored"] is True
    finally:
        runa("down", env=env)
        remove_segments(env)


def test_killed_after_an_idle_save_the_conversation_still_comes_back(tmp_path: Path) -> None:
    env = start_stack(tmp_path, RUNA_SPLINFER_STATE_SAVE_IDLE_S="0.2")
    try:
        with Chat(env) as person:
            first = person.ask("hello there", conversation="killed")
        state = conversations_dir(env) / "killed.state"
        wait_for(state.exists, 10, "the idle save")
        status = json.loads(runa("status", "--json", env=env).stdout)
        pid = next(c["pid"] for c in status["components"] if c["name"] == "splinfer")
        os.kill(pid, signal.SIGKILL)  # no chance to save anything more
        runa("down", env=env)
        assert runa("up", "--detach", env=env).returncode == 0
        with Chat(env) as person:
            back = person.ask("and the sea", conversation="killed")
        assert_only_new_turn_evaluated(first, back)
        assert back["restored"] is True
    finally:
        runa("down", env=env)
        remove_segments(env)


@pytest.fixture
def small_state_dir(tmp_path: Path) -> Iterator[Path]:
    """The stack's state directory on a real 256 KiB filesystem (root only)."""
    with small_filesystem(tmp_path / "home/.local/state", "256k") as state:
        yield state


def test_a_full_disk_while_saving_keeps_the_previous_state(tmp_path: Path,
                                                           small_state_dir: Path) -> None:
    env = start_stack(tmp_path, RUNA_SPLINFER_PARALLEL="1")
    try:
        with Chat(env) as person:
            first = person.ask("hello there", conversation="full")
            person.ask("push", conversation="other")  # 'full' leaves: state saved
            state = conversations_dir(env) / "full.state"
            saved = state.read_bytes()
            second = person.ask("and the sea", conversation="full")
            assert_only_new_turn_evaluated(first, second)
            filler = small_state_dir / "filler"
            free = os.statvfs(small_state_dir)
            with open(filler, "wb") as handle:  # fill the disk to the last block
                handle.write(b"\0" * (free.f_bavail * free.f_frsize))
            person.ask("push", conversation="other")  # 'full' leaves again: no room now
            assert state.read_bytes() == saved  # the previous state, untouched
            assert "state_not_saved" in log_text(env)
            filler.unlink()
            third = person.ask("and the sky", conversation="full")
        # Restored from the older state: the turn the disk could not take is read again,
        # not the whole conversation.
        assert third["restored"] is True
        assert new_turn_tokens(second, third) < third["n_eval"] < third["n_prompt"]
    finally:
        runa("down", env=env)
        remove_segments(env)


@pytest.mark.real_model
def test_default_model_four_at_once_none_shows_another_ones_text(real_model: Path,
                                                                 tmp_path: Path) -> None:
    """Shipped settings (flash attention, f16 cache): not bit-identical to alone, but each
    answer is about its own question and carries no phrase only another answer has."""
    env = start_stack(tmp_path, RUNA_SPLINFER_MODEL=str(real_model),
                      RUNA_SPLINFER_FLASH_ATTN="true", RUNA_SPLINFER_CACHE_TYPE_K="f16",
                      RUNA_SPLINFER_CACHE_TYPE_V="f16", RUNA_SPLINFER_PERSONA="default")
    questions = ["What is the capital of France?", "Write one sentence about the sea.",
                 "Name three colours.", "How do I boil an egg?"]
    topics = ["paris", "sea", "colo", "egg"]
    personas = ["default", "concise", "tutor", "gentle"]
    params = {"temp": 0, "n_predict": 48}
    try:
        with Chat(env) as person:
            solo = [person.ask(q, conversation=f"solo-{i}", persona=p, params=params)["text"]
                    for i, (q, p) in enumerate(zip(questions, personas, strict=True))]
        together: dict[int, str] = {}
        start = threading.Barrier(4)

        def ask(i: int) -> None:
            with Chat(env) as me:
                start.wait()
                together[i] = me.ask(questions[i], conversation=f"together-{i}",
                                     persona=personas[i], params=params)["text"]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert len(together) == 4
        phrases = [set(_phrases(text)) for text in solo]
        for i, text in together.items():
            assert topics[i] in text.lower(), (i, text)
            said = set(_phrases(text))
            for j in range(4):
                if j != i:
                    leaked = said & (phrases[j] - phrases[i])
                    assert not leaked, (i, j, leaked, text)
    finally:
        runa("down", env=env)
        remove_segments(env)


def _phrases(text: str, n: int = 4) -> list[tuple[str, ...]]:
    words = text.lower().split()
    return [tuple(words[k:k + n]) for k in range(len(words) - n + 1)]
