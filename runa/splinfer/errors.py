"""Errors splinfer raises on purpose; each says what was asked and what would work."""

from __future__ import annotations

from pathlib import Path

from runa.errors import RunaError


class InferenceError(RunaError):
    """Base of every inference problem."""

    exit_code = 70  # EX_SOFTWARE


class MemoryFitError(InferenceError):
    """The model with these settings would not fit the memory limit; nothing was loaded."""

    exit_code = 75  # EX_TEMPFAIL: a bigger limit or smaller context would work


class ModelLoadError(InferenceError):
    """llama.cpp refused a model that passed Runa's header checks."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"{path}: llama.cpp could not load the model: {problem}")


class NotLoadedError(InferenceError):
    """Generation was asked of an engine whose model is not loaded."""


class TemplateError(InferenceError):
    """The chat messages cannot be turned into a prompt with this model's template."""

    exit_code = 65  # EX_DATAERR


class PromptTooLongError(InferenceError):
    """Even the newest message alone does not fit the context; counts are in the message."""

    exit_code = 65  # EX_DATAERR

    def __init__(self, needed: int, available: int, n_ctx: int, reserve: int) -> None:
        self.needed = needed
        self.available = available
        self.n_ctx = n_ctx
        self.reserve = reserve
        super().__init__(
            f"the message is too long for this model: the prompt needs {needed} tokens "
            f"(about {words(needed)} words, with the system prompt) but only {available} fit "
            f"(the context holds {n_ctx} tokens, about {words(n_ctx)} words, and {reserve} are "
            "kept for the answer). Shorten it, or put the text into a topic with 'runa "
            "ingest FILE --topic NAME' and ask about it with '/rag on NAME' in chat (or "
            "'runa recall'); a larger context (runa up -c N) takes more."
        )


def words(tokens: int) -> int:
    """About how many English words ``tokens`` tokens are (0.75 a token)."""
    return tokens * 3 // 4


class DecodeError(InferenceError):
    """llama.cpp failed while evaluating tokens."""


class NoFreeSequenceError(InferenceError):
    """Every sequence slot (or every KV cell) is taken by answers still running."""

    exit_code = 75  # EX_TEMPFAIL
