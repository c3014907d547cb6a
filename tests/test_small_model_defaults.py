"""The defaults a new person meets with the small default model (SmolLM2-135M).

A greedy answer of a 135M model easily loops ("301, 302, 303, …") until the context is
full; the default persona caps the answer and penalises repeats so it cannot.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import isolated_env, remove_segments, runa

from runa.client import ServiceClient
from runa.components import load_config as load
from runa.paths import Paths
from runa.splinfer.personas import parse_persona
from runa.stackbus import connect

DEFAULT_PERSONA = Path(__file__).parent.parent / "runa/data/personas/default.md"
CONTEXT = {"RUNA_SPLINFER_CTX_SIZE": "4096", "RUNA_SPLINFER_THREADS": "2",
           "RUNA_LOG_TARGET": "stderr"}


def default_cap() -> int:
    persona = parse_persona(DEFAULT_PERSONA, DEFAULT_PERSONA.read_text(), lambda _w: None)
    return int(persona.params.get("n_predict", -1))


def test_the_default_persona_caps_answers_and_penalises_repeats() -> None:
    persona = parse_persona(DEFAULT_PERSONA, DEFAULT_PERSONA.read_text(), lambda _w: None)
    assert 0 < default_cap() <= 1024
    assert persona.params["repeat_penalty"] > 1.0


@pytest.mark.real_model
@pytest.mark.parametrize("question", [
    "Count from 1 to 300",
    # Uncapped, this one runs greedily until the context is full (4017 tokens measured).
    "List the numbers from 1 to 300, separated by commas.",
])
def test_a_greedy_count_to_300_ends_within_the_default_cap(real_model: Path, tmp_path: Path,
                                                          question: str) -> None:
    env = {**isolated_env(tmp_path), **CONTEXT, "RUNA_SPLINFER_MODEL": str(real_model)}
    up = runa("up", "--detach", env=env)
    assert up.returncode == 0, up.stderr
    try:
        config = load(Paths.for_stack(env["RUNA_STACK"], env), env)
        with connect(config, env["RUNA_STACK"]) as bus, \
                ServiceClient(bus, "splinfer", "test") as client:
            final = client.call({"op": "chat", "text": question,
                                 "params": {"temp": 0}}, idle_timeout=120)
        assert final["persona"] == "default"
        assert final["finish_reason"] in ("stop", "length"), final
        assert final["n_gen"] <= default_cap(), final
    finally:
        runa("down", env=env)
        remove_segments(env)
