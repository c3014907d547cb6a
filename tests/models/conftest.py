"""A tiny GGUF file for the model-file tests (no llama.cpp needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runa.testing.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")
