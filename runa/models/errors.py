"""Errors about model files; each names the path or package a person has to look at."""

from __future__ import annotations

from pathlib import Path

from runa.errors import RunaError


class ModelError(RunaError):
    """Base of every model-file problem."""

    exit_code = 65  # EX_DATAERR


class ModelNotFoundError(ModelError):
    """No model by that name or path; lists where Runa looked."""

    exit_code = 66  # EX_NOINPUT

    def __init__(self, name: str, searched: list[Path], hint: str) -> None:
        self.name = name
        self.searched = searched
        where = ", ".join(str(p) for p in searched) or "(no directories)"
        super().__init__(f"model {name!r} not found (looked in: {where}). {hint}")


class CorruptModelError(ModelError):
    """The file exists but is not a GGUF model llama.cpp can load safely."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: not a usable GGUF model: {problem}")


class NotAChatModelError(ModelError):
    """The file is a model, but not one that can chat (an embedding model, say)."""

    def __init__(self, path: Path, what: str, key: str = "splinfer.model") -> None:
        self.path = path
        self.what = what
        super().__init__(f"{path}: {what}; set {key} to a chat model")


class ModelSetupError(ModelError):
    """Setting up a model failed; the message says what to do instead."""

    exit_code = 69  # EX_UNAVAILABLE


class ModelSpaceError(ModelSetupError):
    """The model did not fit on the disk (or quota) of its directory; nothing was installed."""

    exit_code = 74  # EX_IOERR
