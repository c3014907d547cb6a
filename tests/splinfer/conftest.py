"""Models for the splinfer tests: the tiny synthetic one always, the real one when available."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runa.protocol.params import ContextParams
from runa.splinfer.engine import Engine
from runa.testing.tiny_gguf import write_tiny_gguf

#: Small and fixed so results never depend on the machine's CPU count. Flash
#: attention off: on CPU it rounds to f16, so the same position computed in a
#: batch of 1 or of 400 differs by ~1e-2 in the logits (1e-6 without it), and
#: tests that compare a resumed sequence with a fresh one must compare like with
#: like. Both settings are checked against llama-cpp-python in test_engine.py.
TINY_CONTEXT = ContextParams(
    ctx_size=512, batch_size=512, ubatch_size=512, threads=2, flash_attn=False
)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded synthetic llama-architecture GGUF (ChatML, byte fallback), ~0.8 MB."""
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture
def tiny_engine(tiny_model: Path) -> Iterator[Engine]:
    engine = Engine(tiny_model, TINY_CONTEXT)
    engine.load()
    try:
        yield engine
    finally:
        engine.unload()
