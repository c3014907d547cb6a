"""A stack of its own with the semantic tier on: the tiny synthetic chat model, the real
embedding model (all-MiniLM-L6-v2) and a classifier, started with ``runa up --detach``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support import isolated_env, remove_segments, runa, wait_for

from runa import stackbus as bus_mod
from runa.components import load_config
from runa.paths import Paths
from runa.protocol.heartbeat import Heartbeat, health_key


@contextmanager
def whisper_stack(root: Path, embedding_model: Path, weights: Path | None,
                  settings: dict[str, str] | None = None, context_length: int = 2048,
                  chat_model: Path | None = None) -> Iterator[dict[str, str]]:
    """``weights`` None: the packaged classifier; ``chat_model`` None: the tiny synthetic
    model (its answers are random word-pieces, fast)."""
    from runa.testing.tiny_gguf import write_tiny_gguf

    model = chat_model or write_tiny_gguf(root / "tiny.gguf", context_length=context_length)
    env = {**isolated_env(root, whisper=True), "RUNA_SPLINFER_MODEL": str(model),
           "RUNA_SPLINFER_CTX_SIZE": str(context_length), "RUNA_SPLINFER_THREADS": "1",
           "RUNA_WHISPER_EMBEDDING_MODEL": str(embedding_model),
           **({"RUNA_WHISPER_WEIGHTS": str(weights)} if weights else {}), **(settings or {})}
    up = runa("up", "--detach", env=env, timeout=120)
    assert up.returncode == 0, up.stderr
    try:
        wait_for(lambda: (whisper_health(env) or {}).get("status") == "ready", 60,
                 "whisper to be ready")
        yield env
    finally:
        runa("down", env=env, timeout=120)
        remove_segments(env)


def whisper_health(env: dict[str, str]) -> dict[str, Any] | None:
    paths = Paths.for_stack(env["RUNA_STACK"], env)
    config = load_config(paths, env, {})
    try:
        with bus_mod.connect(config, env["RUNA_STACK"]) as bus:
            beat = Heartbeat.from_json("whisper", bus.get(health_key("whisper")))
    except Exception:  # no bus yet
        return None
    return None if beat is None else {"pid": beat.pid, "status": beat.status}


def ask(env: dict[str, str], question: str, *args: str) -> tuple[dict[str, Any], str]:
    """``runa ask --json``: the final answer and what went to standard error."""
    done = runa("ask", "--json", "--temp", "0", *args, question, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def chat(env: dict[str, str], *lines: str, args: tuple[str, ...] = ()
         ) -> subprocess.CompletedProcess[str]:
    """``runa chat`` reading ``lines`` from a pipe (one question a line)."""
    return subprocess.run([sys.executable, "-m", "runa", "chat", "--temp", "0", *args],
                          input="".join(f"{line}\n" for line in lines), env=env,
                          capture_output=True, text=True, timeout=120)


def kill_whisper(env: dict[str, str]) -> int:
    """SIGKILL the running whisper; its pid."""
    health = whisper_health(env)
    assert health is not None, "whisper is not running"
    os.kill(health["pid"], signal.SIGKILL)
    return int(health["pid"])


def tier2_rules(final: dict[str, Any], side: str | None = None) -> list[tuple[str, str]]:
    """(rule, action) of the answer's tier-2 interventions."""
    return [(i["rule"], i["action"]) for i in final["interventions"]
            if i["rule"].startswith("tier2.") and (side is None or i["side"] == side)]


def stream_while_killing(env: dict[str, str], question: str, policy: str, n_predict: int
                         ) -> tuple[dict[str, Any], str, int]:
    """A greedy chat read piece by piece from the bus, whisper SIGKILLed once the first
    piece arrives: the final envelope, the whole text and the killed pid."""
    from runa.client import ServiceClient

    paths = Paths.for_stack(env["RUNA_STACK"], env)
    pieces: list[str] = []
    final: dict[str, Any] = {}
    killed = 0
    with bus_mod.connect(load_config(paths, env, {}), env["RUNA_STACK"]) as bus, \
            ServiceClient(bus, "splinfer", "test") as client:
        request = {"op": "chat", "text": question, "policy": policy,
                   "params": {"temp": 0, "n_predict": n_predict}}
        for envelope in client.request(request, idle_timeout=120):
            if not pieces and envelope.payload.get("text"):
                killed = kill_whisper(env)
            pieces.append(envelope.payload.get("text", ""))
            if envelope.eof:
                final = envelope.payload
    return final, "".join(pieces), killed
