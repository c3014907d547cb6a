"""A long message: sent in pieces when it outgrows one bus envelope, refused in words and
tokens (with the way out) only when it outgrows the model's context."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import runa, tiny_model_stack

CONTEXT = {"RUNA_SPLINFER_CTX_SIZE": "8192", "RUNA_SPLINFER_THREADS": "2",
           "RUNA_SPLINFER_BATCH_SIZE": "512", "RUNA_BUS_ENVELOPE_MAX_BYTES": "4096",
           "RUNA_LOG_TARGET": "stderr"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with tiny_model_stack(tmp_path_factory.mktemp("long"), CONTEXT, 8192) as (env, _):
        yield env


def chat(env: dict[str, str], *args: str, lines: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runa", "chat", *args], input=lines, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_message_longer_than_an_envelope_is_sent_in_pieces(stack) -> None:
    message = " ".join(f"w{i % 10}" for i in range(3000))  # 9000 characters, 4 KiB envelopes
    result = chat(stack, "--new", "--conversation", "long-1", "-n", "2", lines=message + "\n")
    assert result.returncode == 0, result.stderr
    exported = json.loads(runa("chat", "--export", "long-1", "--format", "json",
                               env=stack).stdout)
    assert exported["messages"][0] == {"role": "user", "content": message}


@pytest.mark.parametrize("words", [
    12000,  # more tokens than the context: refused once tokenized
    40000,  # more characters than any 8192 tokens: refused while its pieces arrive
])
def test_a_message_longer_than_the_context_is_refused_in_words_and_tokens(
        stack, words: int) -> None:
    message = "word " * words
    result = chat(stack, "--new", "--conversation", f"long-{words}", "-n", "2",
                  lines=message + "\n")
    assert result.returncode == 65, result.stderr
    error = result.stderr
    assert "too long for this model" in error and "tokens" in error and "words" in error
    assert "runa ingest" in error and "/rag on" in error
    assert "bytes" not in error and "Traceback" not in error


def test_runa_ask_sends_a_long_question_in_pieces_too(stack) -> None:
    question = " ".join(f"w{i % 10}" for i in range(3000))  # 9000 characters, 4 KiB envelopes
    result = subprocess.run([sys.executable, "-m", "runa", "ask", "--json", "-n", "2", "-"],
                            input=question, env=stack, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n_eval"] > 3000  # the whole question was read
    too_long = subprocess.run([sys.executable, "-m", "runa", "ask", "-n", "2", "-"],
                              input="word " * 12000, env=stack, capture_output=True,
                              text=True, timeout=120)
    assert too_long.returncode == 65, too_long.stderr
    assert "too long for this model" in too_long.stderr and "bytes" not in too_long.stderr
