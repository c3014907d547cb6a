"""Sentence embeddings: the interface tieto and the whisper service need, and its llama.cpp
implementation.

A library below the components, so tieto (retrieval) and whisper (tokenWhisper's semantic
tier) load the same shipped model the same way. Everything above this module takes an
``Embedder`` as a parameter, so the tests use a small deterministic one and each daemon keeps
one loaded model for every request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runa.errors import RunaError
from runa.models.catalog import lookup_embedding
from runa.models.errors import ModelNotFoundError
from runa.models.gguf_info import read_model_info
from runa.models.resolve import resolve_model

EMBEDDING_HINT = (
    "Run 'runa models setup' (it installs the embedding model all-minilm-l6-v2 beside the "
    "chat model), or set {setting} to a BERT embedding GGUF."
)


class Embedder(Protocol):
    """Turns texts into unit-length vectors; counts word-pieces the same way."""

    model_id: str
    """Identifies the model; a topic remembers it and refuses another."""
    dim: int
    max_tokens: int
    """Longest input in word-pieces, special tokens excluded."""

    def count_tokens(self, text: str) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A (len(texts), dim) float32 array of L2-normalised rows."""
        ...


class EmbedderWrapper:
    """Another embedder with something around its calls (same model, same vectors)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.max_tokens = inner.max_tokens
        self.model_id = inner.model_id

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed(texts)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


class EmbedderError(RunaError):
    """The embedding model cannot be loaded or used."""

    exit_code = 69  # EX_UNAVAILABLE


class LlamaEmbedder:
    """A BERT-style GGUF run by llama-cpp-python with mean pooling.

    ``n_ctx = n_batch = n_ubatch = 512``: every input (≤ 256 tokens with
    [CLS]/[SEP]) fits one micro-batch, as non-causal attention requires, and
    two chunks share a decode; larger batches were slower here because the
    attention mask grows with the square of the batch.
    """

    def __init__(self, path: Path, *, threads: int = -1, max_tokens: int | None = None,
                 batch_tokens: int = 512) -> None:
        info = read_model_info(path)
        if info.architecture != "bert":
            raise EmbedderError(f"{path}: architecture {info.architecture!r} is not an "
                                "embedding model (expected bert)")
        # llama.cpp's OpenMP threads spin while waiting; on a busy machine that halved
        # embedding throughput (measured: 1.7 vs 4.5 chunks/s). Passive waiting unless
        # the person chose otherwise; it only takes effect before llama_cpp first loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            from llama_cpp import Llama
        except ImportError as e:  # the 'inference' extra
            raise EmbedderError(f"llama-cpp-python is not installed: {e}") from None
        n_threads = threads if threads > 0 else max(1, len(os.sched_getaffinity(0)))
        batch = batch_tokens
        try:
            self._llm: Any = Llama(
                model_path=str(path), embedding=True, n_ctx=batch, n_batch=batch,
                n_ubatch=batch, n_threads=n_threads, n_threads_batch=n_threads, verbose=False,
            )  # fmt: skip
        except (ValueError, RuntimeError) as e:
            raise EmbedderError(f"{path}: llama.cpp cannot load it: {e}") from None
        self.path = path
        self.dim = info.n_embd
        limit = (info.n_ctx_train or 512) - 2
        self.max_tokens = min(max_tokens or 254, limit, batch - 2)
        self.model_id = f"{info.name or path.stem}:{info.file_size}"

    def _model(self) -> Any:
        if self._llm is None:  # llama.cpp would crash the process on a freed model
            raise EmbedderError(f"{self.path}: the embedding model was closed")
        return self._llm

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return self._model().tokenize(text.encode("utf-8"), add_bos=special, special=False)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        for text in texts:
            n = self.count_tokens(text)
            if n > self.max_tokens:
                raise EmbedderError(f"input of {n} word-pieces is longer than "
                                    f"{self.max_tokens}; chunk it first")
        vectors = np.asarray(self._model().embed(list(texts), normalize=True), dtype=np.float32)
        return vectors.reshape(len(texts), self.dim)

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None


def embedding_model_path(name: str, model_dirs: Sequence[Path],
                         setting: str = "tieto.embedding_model") -> Path:
    """The GGUF file ``name`` means: a catalog name (``default``), a file name or a path;
    ModelNotFoundError naming ``setting``, the key that chose it."""
    known = lookup_embedding(name)
    target = known.filename if known is not None else name
    try:
        return resolve_model(target, model_dirs).path
    except ModelNotFoundError as e:
        raise ModelNotFoundError(name, e.searched,
                                 EMBEDDING_HINT.format(setting=setting)) from None


def configured_embedder(config: Mapping[str, Any], model_dirs: Sequence[Path],
                        component: str) -> LlamaEmbedder:
    """The embedding model a component's settings choose (``<component>.embedding_model``,
    ``<component>.threads``): ModelNotFoundError or EmbedderError saying what to do."""
    setting = f"{component}.embedding_model"
    path = embedding_model_path(config[setting], tuple(model_dirs), setting)
    return LlamaEmbedder(path, threads=config[f"{component}.threads"])
