"""The models a person brings: checked once, copied in with their sha256, listed, removed.

``runa models add`` refuses a file llama.cpp could not run as asked before it is
copied, so the stack never meets it at start: not GGUF, truncated, an architecture
llama.cpp does not know, or an embedding model offered for chat. The copy is made
under a temporary name and renamed, with a sidecar ``<file>.json`` (the same kind
the embedding model has) recording where it came from, its role and its sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gguf

from runa.models.errors import ModelError, ModelNotFoundError
from runa.models.gguf_info import ModelInfo, not_a_chat_model, read_model_info
from runa.models.resolve import list_models

ROLES = ("chat", "embedding")
#: The architectures llama.cpp's GGUF loader names (gguf-py's list, which ships with it).
KNOWN_ARCHITECTURES = frozenset(gguf.MODEL_ARCH_NAMES.values())
CHUNK = 8 << 20


class UnsupportedModelError(ModelError):
    """A well-formed GGUF whose architecture this llama.cpp cannot run."""


class WrongRoleError(ModelError):
    """An embedding model offered for chat, or the other way round."""


class ModelInUseError(ModelError):
    """The model is the one splinfer runs; it stays."""

    exit_code = 75  # EX_TEMPFAIL


class ModelExistsError(ModelError):
    """A model by that name is already in the models directory."""

    exit_code = 73  # EX_CANTCREAT


def sidecar(path: Path) -> Path:
    """``model.gguf.json``: where a model's origin, role and sha256 are kept."""
    return path.with_name(path.name + ".json")


def role_of(info: ModelInfo) -> str:
    return "embedding" if not_a_chat_model(info) else "chat"


@dataclass(frozen=True)
class ModelEntry:
    """One model file as ``runa models list`` shows it; ``problem`` when it cannot be read."""

    name: str
    path: Path
    size: int
    info: ModelInfo | None = None
    sha256: str | None = None
    problem: str = ""

    @property
    def role(self) -> str:
        return role_of(self.info) if self.info else "unknown"

    def as_json(self) -> dict[str, object]:
        info = self.info
        return {"name": self.name, "path": str(self.path), "bytes": self.size,
                "role": self.role, "architecture": info.architecture if info else None,
                "quantization": info.quantization if info else None,
                "context_length": info.n_ctx_train if info else None,
                "chat_template": bool(info and info.chat_template),
                "sha256": self.sha256, "problem": self.problem or None}


def read_entry(path: Path) -> ModelEntry:
    """What ``path`` is, without loading it (its header and its sidecar)."""
    size = path.stat().st_size
    try:
        recorded = json.loads(sidecar(path).read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None
    sha = recorded if isinstance(recorded, str) else None
    try:
        return ModelEntry(path.stem, path, size, read_model_info(path), sha)
    except ModelError as error:
        return ModelEntry(path.stem, path, size, None, sha, str(error))


def list_entries(search_dirs: Sequence[Path]) -> list[ModelEntry]:
    return [read_entry(path) for path in list_models(search_dirs)]


def check_addable(path: Path, role: str) -> ModelInfo:
    """The checked header of ``path`` if llama.cpp can run it as ``role``; else a ModelError
    naming the file and the problem."""
    info = read_model_info(path)  # not GGUF, truncated: CorruptModelError
    if info.architecture not in KNOWN_ARCHITECTURES:
        raise UnsupportedModelError(
            f"{path}: architecture {info.architecture!r} is not one this llama.cpp can run")
    what = not_a_chat_model(info)
    if role == "chat" and what is not None:
        raise WrongRoleError(f"{path}: {what}, not a chat model; add it with --role embedding")
    if role == "embedding" and what is None:
        raise WrongRoleError(f"{path}: a chat model ({info.architecture}), not an embedding model; "
                         "add it with --role chat")
    return info


def _copy(source: Path, target: Path, progress: Callable[[int, int], None]) -> str:
    """Copy ``source`` to ``target`` chunk by chunk; its sha256."""
    digest, done, total = hashlib.sha256(), 0, source.stat().st_size
    with open(source, "rb") as src, open(target, "xb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            done += len(chunk)
            progress(done, total)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest()


def sha256_of(path: Path,
              progress: Callable[[int, int], None] = lambda done, total: None) -> str:
    digest, done, total = hashlib.sha256(), 0, path.stat().st_size
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            progress(done, total)
    return digest.hexdigest()


def add_model(source: Path, models_dir: Path, *, name: str | None = None, role: str = "chat",
              link: bool = False,
              progress: Callable[[int, int], None] = lambda done, total: None) -> ModelEntry:
    """Check ``source`` and put it into ``models_dir`` as ``<name>.gguf`` (copied, or a
    symbolic link with ``link``), with its sidecar; the entry as listed."""
    source = Path(source).expanduser().absolute()
    info = check_addable(source, role)
    stem = (name or source.stem).removesuffix(".gguf")
    if not stem or "/" in stem or stem.startswith("."):
        raise ModelError(f"{name!r} is not a model name (a file name without a slash)")
    target = models_dir / f"{stem}.gguf"
    if target.exists() or target.is_symlink():
        raise ModelExistsError(f"{target} already exists; 'runa models rm {stem}' first, "
                               "or choose another --name")
    models_dir.mkdir(parents=True, exist_ok=True)
    if not link:
        free = shutil.disk_usage(models_dir).free
        if free < info.file_size:
            raise ModelError(f"{models_dir} has {free >> 20} MiB free; {source.name} needs "
                             f"{info.file_size >> 20} MiB")
    partial = models_dir / f".{stem}.gguf.partial"
    try:
        if link:
            digest = sha256_of(source, progress)
            os.symlink(source, partial)
        else:
            digest = _copy(source, partial, progress)
        record = {"name": stem, "role": role, "source": str(source), "linked": link,
                  "sha256": digest, "bytes": info.file_size,
                  "architecture": info.architecture, "quantization": info.quantization}
        sidecar(target).write_text(json.dumps(record, indent=2) + "\n")
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        sidecar(target).unlink(missing_ok=True)
        raise
    return read_entry(target)


def find_entry(name: str, search_dirs: Sequence[Path]) -> ModelEntry:
    """The listed model called ``name`` (with or without ``.gguf``)."""
    stem = name.removesuffix(".gguf")
    for path in list_models(search_dirs):
        if path.stem == stem:
            return read_entry(path)
    raise ModelNotFoundError(name, list(search_dirs), "'runa models list' shows the names.")


def remove_model(entry: ModelEntry, in_use: Path | None) -> None:
    """Delete the model file and its sidecar, unless splinfer runs it."""
    if in_use is not None and _same_file(entry.path, in_use):
        raise ModelInUseError(f"{entry.name} is the model splinfer runs; switch to another "
                              "first ('runa models use NAME') or stop the stack")
    try:
        entry.path.unlink()
    except PermissionError:
        raise ModelError(f"{entry.path}: not yours to remove (a packaged model?)") from None
    sidecar(entry.path).unlink(missing_ok=True)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False
